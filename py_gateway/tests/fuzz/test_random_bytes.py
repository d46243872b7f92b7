"""Property 1: whatever bytes arrive as a request body, the gateway answers sanely and stays up.

For every RPC of the contract and every kind of caller (no token, a user's,
an admin's): random bytes, random protobuf wire format and damaged
serialized requests. The answer is never INTERNAL, UNKNOWN or a hang; a
failure says why (ErrorInfo); nothing in it gives away a stack trace, SQL,
a password hash, a token or an internal address; and the gateway still
answers health checks SERVING afterwards.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import RANDOM_BYTES_EXAMPLES, TURNED_AWAY_EXAMPLES, fuzz_settings
from tests.fuzz.conftest import CALLERS, GatewayProcess, World
from tests.fuzz.known_bugs import known_bug
from tests.fuzz.outcomes import (
    check_admission,
    check_described,
    check_no_leaks,
    check_not_a_bug,
    check_serving,
    invoke,
)
from tests.fuzz.strategies import raw_bodies
from tests.fuzz.support import METHODS, decode, examples_for, known_values, method_id, sample_for


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_random_bytes_never_break_the_gateway(
    method: MethodDescriptor,
    caller: str,
    channel: grpc.Channel,
    gateway_process: GatewayProcess,
    restored_world: World,
) -> None:
    world = restored_world
    body = raw_bodies(sample_for(method, world, caller), known_values(world))
    bodies = st.lists(body, min_size=1, max_size=4) if method.client_streaming else st.tuples(body)
    examples = examples_for(method, caller, world, RANDOM_BYTES_EXAMPLES, TURNED_AWAY_EXAMPLES)

    @fuzz_settings(examples)
    @given(drawn=bodies)
    def random_bodies(drawn: list[bytes] | tuple[bytes]) -> None:
        sent = list(drawn)
        outcome = invoke(channel, method, sent, world.callers[caller])
        requests = [decode(method, body) for body in sent] or [None]
        if not any(known_bug(method, request, outcome) for request in requests):
            check_not_a_bug(outcome, gateway_process)
            check_no_leaks(outcome, sent=b"".join(sent), world=world, gateway=gateway_process)
            check_described(outcome, fields_at_fault=None not in requests)
            check_admission(outcome, caller, world)
        check_serving(channel, gateway_process)

    random_bodies()
