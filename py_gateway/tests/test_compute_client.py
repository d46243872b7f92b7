"""The gateway's client to rust_compute (compute_client.py), against the real binary.

Every way a call can fail becomes one domain error here: rust_compute's own
statuses pass on with their details, the rest is translated without the
internal address, and the channel finds rust_compute again by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub
from prometheus_client import REGISTRY
from sqlalchemy.engine import URL

from nuell_gateway import request_id
from nuell_gateway.compute_client import ComputeClient, Forwarding
from nuell_gateway.errors import DeadlineExceeded, RelayedStatus, Unavailable
from nuell_gateway.metrics import COMPUTE_ERRORS
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.reference import text_analytics as reference
from tests.utils.compute import RustCompute, free_port
from tests.utils.factories import bearer, make_user
from tests.utils.rpc import error_details

NO_DEADLINE = Forwarding(seconds_left=10)


@pytest.fixture
async def client(compute_address: str) -> AsyncIterator[ComputeClient]:
    compute = ComputeClient(compute_address)
    yield compute
    await compute.close()


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value(f"{COMPUTE_ERRORS._name}_total", {"reason": reason}) or 0.0


async def test_japanese_text_is_analysed_as_the_reference_does(client: ComputeClient) -> None:
    text = "東京タワーに行きました。ラーメンを食べた。"
    reply = await client.analyze(pb.AnalyzeRequest(text=text), NO_DEADLINE)
    assert reply.analysis.word_count == reference.analyze(text)["word_count"]
    assert str(reply.analysis.simhash) == reference.analyze(text)["simhash"]


async def test_rust_computes_own_refusal_is_relayed_with_its_details(
    client: ComputeClient,
) -> None:
    duplicate_ids = pb.FindNearDuplicatesRequest(
        documents=[pb.Document(id="文書", text="一つ目"), pb.Document(id="文書", text="二つ目")],
        threshold=0.5,
    )
    with pytest.raises(RelayedStatus) as caught:
        await client.find_near_duplicates(duplicate_ids, NO_DEADLINE)
    status = caught.value.status
    assert caught.value.code == status.code == code_pb2.INVALID_ARGUMENT
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert info.domain == "compute.nuell.dev"
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert {v.reason for v in bad_request.field_violations} == {"documents.unique_ids"}


async def test_a_deadline_that_passes_is_deadline_exceeded(client: ComputeClient) -> None:
    await client.analyze(pb.AnalyzeRequest(text="warm"), NO_DEADLINE)  # connected already
    # ~3.5 MiB of distinct words: several times 10 ms of work, even at AVX-512 speed.
    documents = [
        pb.Document(id=str(n), text=" ".join(f"w{n}x{k}" for k in range(600))) for n in range(500)
    ]
    started = time.monotonic()
    # Whichever side notices first: grpc here (DeadlineExceeded) or rust_compute
    # (its own status, relayed); the code is the same.
    with pytest.raises((DeadlineExceeded, RelayedStatus)) as caught:
        await client.find_near_duplicates(
            pb.FindNearDuplicatesRequest(documents=documents, threshold=0.5),
            Forwarding(seconds_left=0.01),
        )
    assert time.monotonic() - started < 2
    assert caught.value.code == code_pb2.DEADLINE_EXCEEDED


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "stream"])
async def test_nothing_listening_is_unavailable_fast_and_names_no_address(
    streaming: bool,
) -> None:
    port = free_port()
    client = ComputeClient(f"127.0.0.1:{port}")
    before = _failures("COMPUTE_UNAVAILABLE")

    async def one_request() -> AsyncIterator[pb.AnalyzeStreamRequest]:
        yield pb.AnalyzeStreamRequest(id="1", text="こんにちは")

    async def call() -> None:
        if streaming:
            async for _ in client.analyze_stream(one_request(), NO_DEADLINE):
                pass
        else:
            await client.analyze(pb.AnalyzeRequest(text="こんにちは"), NO_DEADLINE)

    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as caught:
            await call()
    finally:
        await client.close()
    assert time.monotonic() - started < 2
    assert caught.value.reason == "COMPUTE_UNAVAILABLE"
    assert "127.0.0.1" not in caught.value.message
    assert str(port) not in caught.value.message
    assert _failures("COMPUTE_UNAVAILABLE") == before + 1


async def test_the_request_id_goes_along(client: ComputeClient) -> None:
    identity = request_id.identify((("x-request-id", "client-test-42"),))
    assert ("x-request-id", "client-test-42") in NO_DEADLINE.metadata
    reply = await client.analyze(pb.AnalyzeRequest(text="hi"), NO_DEADLINE)
    assert reply.analysis.word_count == 1
    assert request_id.current() is identity


async def test_compute_down_is_unavailable_fast_and_recovers_by_itself(
    database_url: URL, empty_tables: None
) -> None:
    port = free_port()
    rust = RustCompute(port).start()
    gateway = await Gateway.start(make_settings(database_url, compute_target=rust.address))
    try:
        metadata = bearer(
            gateway.resources.access_tokens, await make_user(gateway.resources.sessions)
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = ComputeServiceStub(channel)
            await stub.Analyze(pb.AnalyzeRequest(text="up"), metadata=metadata)

            rust.kill()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Analyze(pb.AnalyzeRequest(text="down"), metadata=metadata, timeout=10)
            assert time.monotonic() - started < 2
            details = error_details(caught.value)
            assert details.code == grpc.StatusCode.UNAVAILABLE
            assert details.error_info is not None
            assert details.error_info.reason == "COMPUTE_UNAVAILABLE"
            assert "127.0.0.1" not in details.message
            assert str(port) not in details.message

            rust = RustCompute(port).start()
            for _ in range(50):  # the channel reconnects on its own
                try:
                    await stub.Analyze(pb.AnalyzeRequest(text="back"), metadata=metadata)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the gateway did not reach rust_compute again")
    finally:
        await gateway.stop()
        rust.stop()
