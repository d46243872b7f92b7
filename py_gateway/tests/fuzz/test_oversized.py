"""Property 3: a request over the gateway's 4 MiB inbound limit is RESOURCE_EXHAUSTED, not a crash.

Every RPC, every kind of caller: the valid sample carrying one unknown
field that takes it just past the limit, and for the stream an oversized
message after a good one. The answer is RESOURCE_EXHAUSTED, it leaks
nothing, it changes no row, and the gateway keeps serving.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tests.fuzz.conftest import Database, GatewayProcess, World
from tests.fuzz.outcomes import (
    MAX_MESSAGE_BYTES,
    check_admission,
    check_no_leaks,
    check_serving,
    invoke,
)
from tests.fuzz.strategies import varint
from tests.fuzz.support import METHODS, method_id, sample_for, turned_away

# A field number the contract does not use: the body stays a well-formed request.
UNKNOWN_FIELD = 1000


def oversized(body: bytes, total: int) -> bytes:
    """`body` plus an unknown length-delimited field, `total` bytes in all."""
    key = varint((UNKNOWN_FIELD << 3) | 2)
    payload = total - len(body) - len(key)
    payload -= len(varint(payload))
    padded = body + key + varint(payload) + b"x" * payload
    if len(padded) < total:  # the length prefix shrank by a byte: pad the payload back
        padded = body + key + varint(payload + 1) + b"x" * (payload + 1)
    assert len(padded) >= total
    return padded


def _method(name: str) -> MethodDescriptor:
    return next(m for m in METHODS if m.name == name)


# Just over the limit for every RPC, from a caller who gets past the call
# boundary (a unary request is read whole before anyone looks at the caller, so
# one caller shows it); the stream also without a token; far over the limit
# once for a unary RPC and the stream.
CASES = [
    *(
        pytest.param(method, "admin", MAX_MESSAGE_BYTES + 1, id=method_id(method))
        for method in METHODS
    ),
    pytest.param(_method("AnalyzeStream"), "anonymous", MAX_MESSAGE_BYTES + 1, id="anonymous"),
    *(
        pytest.param(_method(name), "admin", 8 * MAX_MESSAGE_BYTES, id=f"{name}-admin-32MiB")
        for name in ("CreatePost", "AnalyzeStream")
    ),
]


@pytest.mark.parametrize(("method", "caller", "size"), CASES)
def test_oversized_requests_are_resource_exhausted(
    method: MethodDescriptor,
    caller: str,
    size: int,
    channel: grpc.Channel,
    gateway_process: GatewayProcess,
    database: Database,
    restored_world: World,
) -> None:
    world = restored_world
    good = sample_for(method, world, caller).SerializeToString()
    bodies = [good, oversized(good, size)] if method.client_streaming else [oversized(good, size)]
    before = database.snapshot()
    outcome = invoke(channel, method, bodies, world.callers[caller])
    if method.client_streaming and turned_away(method, caller, world):
        # Refused at the call boundary, before the stream's messages are read.
        check_admission(outcome, caller, world)
    else:
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.describe()
    check_no_leaks(outcome, sent=good, world=world, gateway=gateway_process)
    assert database.snapshot() == before
    check_serving(channel, gateway_process)
