"""A test-side OTLP/gRPC trace collector: records every span it is sent.

It serves `opentelemetry.proto.collector.trace.v1.TraceService/Export` with
grpc.aio on its own thread and event loop, so it keeps receiving while a
test blocks (a subprocess wait, a synchronous call). Standalone on purpose
(no `tests.` imports): the deploy tests load it by path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

T = TypeVar("T")


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ExportedSpan:
    """One received span, ids as lowercase hex ('' for no parent)."""

    service: str
    name: str
    kind: str  # SERVER, CLIENT, ...
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    start_ns: int
    end_ns: int
    resource: dict[str, Any] = field(repr=False)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: OtlpCollector) -> None:
        self._collector = collector

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._collector._receive(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpCollector:
    """Start with `start()`; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ExportedSpan] = []
        self._requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpCollector:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        return self

    async def _serve(self) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def _receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ExportedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            status=trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            resource=resource,
                        )
                    )
        with self._lock:
            self._requests += 1
            self._spans.extend(received)

    @property
    def requests(self) -> int:
        """Export calls received so far."""
        with self._lock:
            return self._requests

    def spans(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, found: Callable[[list[ExportedSpan]], T | None], within: float = 20) -> T:
        """The first truthy `found(spans)`, polling (blocks the calling thread)."""
        deadline = time.monotonic() + within
        while True:
            if result := found(self.spans()):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"no such spans within {within} s; got {self.spans()}")
            time.sleep(0.05)

    async def wait(self, found: Callable[[list[ExportedSpan]], T | None], within: float = 20) -> T:
        """`wait_for` for async tests: polls without blocking their loop."""
        deadline = time.monotonic() + within
        while True:
            if result := found(self.spans()):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"no such spans within {within} s; got {self.spans()}")
            await asyncio.sleep(0.05)
