"""OpenTelemetry spans over OTLP/gRPC, only when an endpoint is configured.

With `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
set (and `OTEL_SDK_DISABLED` not `true`), each gateway process exports one
SERVER span per Nuell RPC and one CLIENT span per call to rust_compute,
through the SDK's BatchSpanProcessor and OTLP exporter. Without one,
`enabled` stays False, the SDK is not even imported, and the call path only
reads that flag.

The spans carry the ids the gateway already logs and propagates
(`request_id.CallIdentity`), so a trace or span id found in a log line finds
the span, and back. A span is recorded whole when its call ends, from the
ids chosen when the call began and the call's start time, so nothing is
held per call while it runs.

Sampling follows the trace's sampled flag (parent-based; a trace the gateway
starts itself is sampled), so an unsampled call costs no span and
OTEL_TRACES_SAMPLER is not read. The SDK reads the other OTEL_* variables
itself (headers, timeout, OTEL_BSP_*, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import grpc

from nuell_gateway import request_id

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

logger = logging.getLogger(__name__)

# Read on every call; True only while exporting.
enabled = False

SERVICE_NAME = "py_gateway"
# Spans still unsent this long after the drain are dropped, so an
# unreachable collector cannot hold a shutdown past its grace period.
FLUSH_SECONDS = 5.0

# Server span errors per the semantic conventions for gRPC; the other codes
# are the caller's doing. On a client span every code but OK is an error.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class _Exporting:
    """This process's export pipeline, and how a finished call becomes a span."""

    def __init__(self) -> None:
        # Imported here: a gateway that does not export never loads the SDK.
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self._trace = trace
        self._readable_span = ReadableSpan
        self._kinds = {"SERVER": trace.SpanKind.SERVER, "CLIENT": trace.SpanKind.CLIENT}
        self._sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self._ok, self._error = trace.Status(), trace.Status(trace.StatusCode.ERROR)
        self._scope = InstrumentationScope("nuell_gateway")
        # Our name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES give
        # one; the pid tells a gateway's worker processes apart.
        self._resource = Resource.create(
            {"service.name": SERVICE_NAME, "process.pid": os.getpid()}
        ).merge(OTELResourceDetector().detect())
        self.processor = BatchSpanProcessor(OTLPSpanExporter())

    def record(
        self,
        *,
        kind: str,
        name: str,
        identity: request_id.CallIdentity,
        span_id: str,
        parent_span_id: str | None,
        begun_ns: int,
        error: bool,
        attributes: dict[str, str | int],
    ) -> None:
        """Queue one finished, sampled span for export."""
        # Built finished, as the SDK's tracer hands a span to the processor
        # when it ends: the ids were chosen when the call began, and this
        # costs an eighth of a span started and ended through the tracer.
        trace = self._trace
        trace_id = int(identity.trace_id, 16)
        parent = None
        if parent_span_id is not None:
            parent = trace.SpanContext(
                trace_id, int(parent_span_id, 16), is_remote=True, trace_flags=self._sampled
            )
        span = self._readable_span(
            name=name,
            context=trace.SpanContext(
                trace_id, int(span_id, 16), is_remote=False, trace_flags=self._sampled
            ),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=self._kinds[kind],
            status=self._error if error else self._ok,
            start_time=begun_ns,
            end_time=time.time_ns(),
            instrumentation_scope=self._scope,
        )
        self.processor.on_end(span)


_exporting: _Exporting | None = None
# Gateways started in this process (tests run several); the last to stop flushes.
_users = 0


def start() -> None:
    """Begin exporting if the environment asks for it; once per gateway start."""
    global enabled, _exporting, _users
    if not configured():
        return
    _users += 1
    if _exporting is None:
        _exporting = _Exporting()
        enabled = True
        logger.info("exporting traces over OTLP")


async def stop() -> None:
    """Once the last gateway stops: flush the queued spans, within FLUSH_SECONDS."""
    global enabled, _exporting, _users
    if _exporting is None:
        return
    _users -= 1
    if _users > 0:
        return
    processor, _exporting, enabled = _exporting.processor, None, False
    loop = asyncio.get_running_loop()
    flushed = loop.create_future()

    def finished() -> None:
        if not flushed.done():
            flushed.set_result(None)

    def shut_down() -> None:
        try:
            processor.shutdown()  # type: ignore[no-untyped-call]
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(finished)

    # A daemon thread rather than the loop's executor, which the process
    # waits for on exit: a stuck export must not hold the process.
    threading.Thread(target=shut_down, name="otel-shutdown", daemon=True).start()
    try:
        await asyncio.wait_for(flushed, FLUSH_SECONDS)
    except TimeoutError:
        logger.warning("spans not exported in time were dropped at shutdown")


def current_processor() -> BatchSpanProcessor | None:
    """This process's span processor while exporting, else None."""
    return None if _exporting is None else _exporting.processor


def _sampled(identity: request_id.CallIdentity) -> bool:
    return bool(int(identity.trace_flags, 16) & 1)


def _attributes(method: str, code: grpc.StatusCode, request: str) -> dict[str, str | int]:
    service, _, name = method.partition("/")
    return {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": name,
        "rpc.grpc.status_code": code.value[0],
        "nuell.request_id": request,
    }


def record_server_span(path: str, code: grpc.StatusCode, started: float) -> None:
    """The SERVER span of the call that just ended with `code`.

    `path` is the gRPC path (`/package.Service/Method`), `started` the
    call's `time.perf_counter()` at its beginning.
    """
    exporting, identity = _exporting, request_id.current()
    if exporting is None or not _sampled(identity):
        return
    method = path.lstrip("/")
    exporting.record(
        kind="SERVER",
        name=method,
        identity=identity,
        span_id=identity.span_id,
        parent_span_id=identity.parent_span_id,
        begun_ns=time.time_ns() - int((time.perf_counter() - started) * 1e9),
        error=code in _SERVER_ERRORS,
        attributes=_attributes(method, code, identity.request_id),
    )


class ClientSpan:
    """One call onward to rust_compute; its span id is the parent that service sees."""

    __slots__ = ("_begun_ns", "_identity", "_method", "_span_id", "metadata")

    def __init__(self, method: str) -> None:
        """`method` is `package.Service/Method`."""
        identity = request_id.current()
        self._identity = identity
        self._method = method
        self._span_id = secrets.token_hex(8)
        self._begun_ns = time.time_ns()
        # What the call sends instead of CallIdentity.outgoing_metadata().
        self.metadata = (
            (request_id.REQUEST_ID_HEADER, identity.request_id),
            (
                request_id.TRACEPARENT_HEADER,
                f"00-{identity.trace_id}-{self._span_id}-{identity.trace_flags}",
            ),
        )

    def end(self, code: grpc.StatusCode) -> None:
        exporting, identity = _exporting, self._identity
        if exporting is None or not _sampled(identity):
            return
        exporting.record(
            kind="CLIENT",
            name=self._method,
            identity=identity,
            span_id=self._span_id,
            # Outside a served call (the analysis backfill) there is no
            # server span to hang under: the call is the root of its branch.
            parent_span_id=identity.span_id if identity.served else None,
            begun_ns=self._begun_ns,
            error=code != grpc.StatusCode.OK,
            attributes=_attributes(self._method, code, identity.request_id),
        )
