"""OpenTelemetry export across the gateway and rust_compute, observed by a real
OTLP/gRPC collector (tests/utils/otlp.py): a real gateway, the real
rust_compute binary and PostgreSQL, nothing of ours replaced.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy.engine import URL

from nuell_gateway import tracing
from nuell_gateway.request_id import CallIdentityFilter
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.test_cli import _env, _gateway_process
from tests.utils.compute import RustCompute, free_port
from tests.utils.factories import bearer, make_user
from tests.utils.otlp import ExportedSpan, OtlpCollector

ANALYZE = "nuell.compute.v1.ComputeService/Analyze"
FIND_NEAR_DUPLICATES = "nuell.compute.v1.ComputeService/FindNearDuplicates"
GET_CURRENT_USER = "nuell.users.v1.UserService/GetCurrentUser"
# Export within milliseconds of a span's end, so tests wait little.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
# What a developer's shell might set and would change what the tests see.
OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    running = OtlpCollector().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def compute_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traced-compute") / "rust_compute.log"


@pytest.fixture(scope="module")
def traced_compute(collector: OtlpCollector, compute_log: Path) -> Iterator[RustCompute]:
    """A rust_compute of its own that exports to `collector` and logs its calls."""
    with compute_log.open("w") as log:
        env = {
            **dict.fromkeys(OTEL_VARIABLES, ""),
            **FAST_EXPORT,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "NUELL_COMPUTE_LOG_LEVEL": "info,rust_compute=debug",
        }
        compute = RustCompute(env=env, stderr=log).start()
        yield compute
        compute.stop()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch, collector: OtlpCollector) -> None:
    """This process's environment asks for export to `collector`."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    for name, value in FAST_EXPORT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def traced_gateway(
    database_url: URL, empty_tables: None, otel_env: None, traced_compute: RustCompute
) -> AsyncIterator[Gateway]:
    settings = make_settings(database_url, compute_target=traced_compute.address)
    running = await Gateway.start(settings)
    assert tracing.enabled
    yield running
    await running.stop()
    assert not tracing.enabled


@pytest.fixture
async def channel_to(traced_gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{traced_gateway.port}") as channel:
        yield channel


@pytest.fixture
async def signed_in(traced_gateway: Gateway) -> Metadata:
    resources = traced_gateway.resources
    return bearer(resources.access_tokens, await make_user(resources.sessions))


def _parent(trace_id: str, flags: str = "01") -> tuple[str, str, str]:
    """A caller's span id and the traceparent naming it."""
    span_id = secrets.token_hex(8)
    return span_id, f"00-{trace_id}-{span_id}-{flags}", flags


def _returned(trailers: Any) -> tuple[str, str, str]:
    """(trace id, span id, flags) of the traceparent in `trailers`."""
    version, trace_id, span_id, flags = dict(trailers)["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, flags


def _one(spans: list[ExportedSpan], **wanted: str) -> ExportedSpan | None:
    found = [s for s in spans if all(getattr(s, key) == value for key, value in wanted.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def _chain(spans: list[ExportedSpan], trace_id: str) -> tuple[ExportedSpan, ...] | None:
    """The gateway's SERVER and CLIENT spans and rust_compute's SERVER span of a trace."""
    server = _one(spans, trace_id=trace_id, service="py_gateway", kind="SERVER")
    client = _one(spans, trace_id=trace_id, service="py_gateway", kind="CLIENT")
    compute = _one(spans, trace_id=trace_id, service="rust_compute", kind="SERVER")
    return (server, client, compute) if server and client and compute else None


def _rpc(method: str, code: grpc.StatusCode, request_id: str) -> dict[str, object]:
    service, name = method.split("/")
    return {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": name,
        "rpc.grpc.status_code": code.value[0],
        "nuell.request_id": request_id,
    }


def _compute_log_lines(path: Path, request_id: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line.get("span", {}).get("request_id") == request_id]


async def test_one_trace_from_the_caller_through_both_services(
    channel_to: grpc.aio.Channel,
    signed_in: Metadata,
    collector: OtlpCollector,
    compute_log: Path,
) -> None:
    trace_id, request_id = secrets.token_hex(16), f"traced-{secrets.token_hex(4)}"
    caller_span, traceparent, _ = _parent(trace_id)

    call = ComputeServiceStub(channel_to).Analyze(
        pb.AnalyzeRequest(text="follow this call"),
        metadata=(*signed_in, ("x-request-id", request_id), ("traceparent", traceparent)),
    )
    await call
    returned_trace, gateway_span, flags = _returned(await call.trailing_metadata())

    server, client, compute = await collector.wait(lambda spans: _chain(spans, trace_id))
    assert (returned_trace, flags) == (trace_id, "01")
    # The gateway's span: the caller's child, with the id it returned.
    assert server.name == ANALYZE
    assert server.parent_span_id == caller_span
    assert server.span_id == gateway_span
    assert server.attributes == _rpc(ANALYZE, grpc.StatusCode.OK, request_id)
    assert server.status == "UNSET"
    assert server.resource["service.name"] == "py_gateway"
    # Its call onward, and rust_compute's span under that call.
    assert client.name == ANALYZE
    assert client.parent_span_id == server.span_id
    assert client.span_id not in (server.span_id, caller_span)
    assert client.attributes == _rpc(ANALYZE, grpc.StatusCode.OK, request_id)
    assert compute.name == ANALYZE
    assert compute.parent_span_id == client.span_id
    assert compute.attributes == _rpc(ANALYZE, grpc.StatusCode.OK, request_id)
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns
    assert compute.start_ns <= compute.end_ns

    # rust_compute's log lines about the call name the exported span.
    lines = _compute_log_lines(compute_log, request_id)
    assert {line["message"] for line in lines} >= {"rpc started", "rpc finished"}
    for line in lines:
        assert line["span"] == {
            "name": "rpc",
            "method": f"/{ANALYZE}",
            "request_id": request_id,
            "trace_id": trace_id,
            "span_id": compute.span_id,
        }


async def test_a_trace_the_gateway_starts_is_sampled_and_rooted_there(
    channel_to: grpc.aio.Channel, signed_in: Metadata, collector: OtlpCollector
) -> None:
    call = ComputeServiceStub(channel_to).Analyze(
        pb.AnalyzeRequest(text="no caller trace"), metadata=signed_in
    )
    await call
    trace_id, gateway_span, flags = _returned(await call.trailing_metadata())

    server, client, compute = await collector.wait(lambda spans: _chain(spans, trace_id))
    assert flags == "01"
    assert server.parent_span_id == ""
    assert server.span_id == gateway_span
    assert (client.parent_span_id, compute.parent_span_id) == (server.span_id, client.span_id)


async def test_failed_calls_carry_their_code(
    channel_to: grpc.aio.Channel,
    signed_in: Metadata,
    collector: OtlpCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Refused by the gateway itself: no call onward, and the log line about
    # it names the exported span.
    trace_id = secrets.token_hex(16)
    caller_span, traceparent, _ = _parent(trace_id)
    caplog.set_level(logging.INFO, logger="nuell_gateway")
    caplog.handler.addFilter(CallIdentityFilter())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await UserServiceStub(channel_to).GetCurrentUser(
            user_service_pb2.GetCurrentUserRequest(),
            metadata=(("authorization", "Bearer not-a-token"), ("traceparent", traceparent)),
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _, refused_span, _ = _returned(refused.value.trailing_metadata())

    server = await collector.wait(lambda spans: _one(spans, trace_id=trace_id))
    assert (server.name, server.kind, server.parent_span_id) == (
        GET_CURRENT_USER,
        "SERVER",
        caller_span,
    )
    assert server.span_id == refused_span
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert server.status == "UNSET"  # the caller's doing, not the server's
    (logged,) = [r for r in caplog.records if r.getMessage() == "rejected access token"]
    assert (logged.trace_id, logged.span_id) == (trace_id, server.span_id)  # type: ignore[attr-defined]

    # Refused by rust_compute: every hop has the code; the call onward failed.
    trace_id = secrets.token_hex(16)
    _, traceparent, _ = _parent(trace_id)
    with pytest.raises(grpc.aio.AioRpcError) as relayed:
        await ComputeServiceStub(channel_to).FindNearDuplicates(
            pb.FindNearDuplicatesRequest(
                documents=[pb.Document(id="x", text="a"), pb.Document(id="x", text="b")],
                threshold=0.5,
            ),
            metadata=(*signed_in, ("traceparent", traceparent)),
        )
    assert relayed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    spans = await collector.wait(lambda spans: _chain(spans, trace_id))
    for span in spans:
        assert span.name == FIND_NEAR_DUPLICATES
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    server, client, compute = spans
    assert (server.status, client.status, compute.status) == ("UNSET", "ERROR", "UNSET")


async def test_an_unreachable_compute_is_an_error_on_both_gateway_spans(
    database_url: URL, empty_tables: None, otel_env: None, collector: OtlpCollector
) -> None:
    gateway = await Gateway.start(
        make_settings(database_url, compute_target=f"127.0.0.1:{free_port()}")
    )
    try:
        me = bearer(gateway.resources.access_tokens, await make_user(gateway.resources.sessions))
        trace_id = secrets.token_hex(16)
        _, traceparent, _ = _parent(trace_id)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ComputeServiceStub(channel).Analyze(
                    pb.AnalyzeRequest(text="nobody home"),
                    metadata=(*me, ("traceparent", traceparent)),
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gateway.stop()

    def both(spans: list[ExportedSpan]) -> tuple[ExportedSpan, ExportedSpan] | None:
        server = _one(spans, trace_id=trace_id, kind="SERVER")
        client = _one(spans, trace_id=trace_id, kind="CLIENT")
        return (server, client) if server and client else None

    server, client = await collector.wait(both)
    unavailable = grpc.StatusCode.UNAVAILABLE.value[0]
    assert server.attributes["rpc.grpc.status_code"] == unavailable
    assert client.attributes["rpc.grpc.status_code"] == unavailable
    assert (server.status, client.status) == ("ERROR", "ERROR")
    assert client.parent_span_id == server.span_id


async def test_unsampled_traces_are_not_exported_by_any_hop(
    channel_to: grpc.aio.Channel, signed_in: Metadata, collector: OtlpCollector
) -> None:
    unsampled = secrets.token_hex(16)
    _, traceparent, _ = _parent(unsampled, flags="00")
    call = ComputeServiceStub(channel_to).Analyze(
        pb.AnalyzeRequest(text="not sampled"), metadata=(*signed_in, ("traceparent", traceparent))
    )
    await call
    assert _returned(await call.trailing_metadata())[::2] == (unsampled, "00")

    # A sampled call after it: once its spans are in, the earlier ones
    # would be too (each exporter sends in order).
    sampled = secrets.token_hex(16)
    _, traceparent, _ = _parent(sampled)
    await ComputeServiceStub(channel_to).Analyze(
        pb.AnalyzeRequest(text="sampled"), metadata=(*signed_in, ("traceparent", traceparent))
    )
    await collector.wait(lambda spans: _chain(spans, sampled))
    assert [s for s in collector.spans() if s.trace_id == unsampled] == []


def _exporters() -> list[object]:
    module = sys.modules.get("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    if module is None:
        return []
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, module.OTLPSpanExporter)]


@pytest.mark.parametrize(
    "environ",
    [{}, {"OTEL_SDK_DISABLED": "true"}],
    ids=["no-endpoint", "sdk-disabled"],
)
async def test_without_an_endpoint_nothing_is_exported(
    database_url: URL,
    empty_tables: None,
    collector: OtlpCollector,
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**FAST_EXPORT, **environ}.items():
        monkeypatch.setenv(name, value)
    if environ:  # an endpoint that would receive the spans, were they exported
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    exported_before = [s for s in collector.spans() if s.service == "py_gateway"]

    gateway = await Gateway.start(make_settings(database_url))  # the untraced rust_compute
    try:
        assert not tracing.enabled
        assert tracing.current_processor() is None
        assert _exporters() == []
        me = bearer(gateway.resources.access_tokens, await make_user(gateway.resources.sessions))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            await ComputeServiceStub(channel).Analyze(pb.AnalyzeRequest(text="x"), metadata=me)
            with pytest.raises(grpc.aio.AioRpcError):
                await UserServiceStub(channel).GetCurrentUser(
                    user_service_pb2.GetCurrentUserRequest()
                )
        await asyncio.sleep(0.5)  # ten export intervals
    finally:
        await gateway.stop()

    assert [s for s in collector.spans() if s.service == "py_gateway"] == exported_before
    assert _exporters() == []


async def test_every_worker_exports_and_flushes_when_it_stops(
    database_url: URL, compute_address: str, collector: OtlpCollector, tmp_path: Path
) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_GATEWAY_ADDR="127.0.0.1:0",
        NUELL_WORKERS="2",
        NUELL_COMPUTE_TARGET=compute_address,
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        # Nothing leaves before shutdown: what arrives, the flush sent.
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    for name in OTEL_VARIABLES[1:]:
        env.pop(name, None)
    trace_ids = [secrets.token_hex(16) for _ in range(16)]
    with (
        (tmp_path / "gateway.log").open("w") as log,
        _gateway_process(env, stderr=log) as (process, address),
    ):
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        for trace_id in trace_ids:  # a connection each, so both workers serve some
            async with grpc.aio.insecure_channel(address, options=own_connection) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await UserServiceStub(channel).GetCurrentUser(
                        user_service_pb2.GetCurrentUserRequest(),
                        metadata=(("traceparent", _parent(trace_id)[1]),),
                    )
        await asyncio.sleep(0.5)
        assert not [s for s in collector.spans() if s.trace_id in trace_ids]

        process.terminate()
        assert await asyncio.to_thread(process.wait, 30) == 0

    spans = [s for s in collector.spans() if s.trace_id in trace_ids]
    assert sorted(s.trace_id for s in spans) == sorted(trace_ids)
    assert {s.name for s in spans} == {GET_CURRENT_USER}
    assert len({s.resource["process.pid"] for s in spans}) == 2
