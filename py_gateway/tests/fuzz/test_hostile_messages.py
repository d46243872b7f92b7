"""Property 2: well-typed but hostile requests are refused cleanly and change nothing.

For every RPC of the contract and every kind of caller, requests built from
the proto descriptors with hostile values in every field (see
strategies.py). The answer is never INTERNAL, UNKNOWN or a hang; a failure
carries an ErrorInfo, and INVALID_ARGUMENT also BadRequest field
violations; nothing in it leaks; a caller without a token or without the
RPC's scope is turned away whatever the body; and the database is exactly
as it was whenever the answer is not OK (and always, for RPCs that only
read).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.budget import HOSTILE_MESSAGE_EXAMPLES, TURNED_AWAY_EXAMPLES, fuzz_settings
from tests.fuzz.conftest import CALLERS, Database, GatewayProcess, World
from tests.fuzz.known_bugs import known_bug
from tests.fuzz.outcomes import (
    MAX_MESSAGE_BYTES,
    Outcome,
    check_admission,
    check_described,
    check_no_leaks,
    check_not_a_bug,
    check_serving,
    invoke,
)
from tests.fuzz.strategies import requests
from tests.fuzz.support import METHODS, Drawn, examples_for, known_values, method_id, sample_for

# RPCs that never write, whatever they answer.
READ_ONLY = frozenset(
    {
        "GetCurrentUser",
        "GetUser",
        "ListUsers",
        "GetPost",
        "ListPosts",
        "Analyze",
        "Compare",
        "FindNearDuplicates",
        "AnalyzeStream",
    }
)


def _check_size_refusal(outcome: Outcome) -> None:
    """Over the inbound limit: RESOURCE_EXHAUSTED from grpc itself, before any work."""
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.describe()


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_hostile_messages_are_refused_cleanly_and_change_nothing(
    method: MethodDescriptor,
    caller: str,
    channel: grpc.Channel,
    gateway_process: GatewayProcess,
    database: Database,
    restored_world: World,
) -> None:
    world = restored_world
    request = requests(sample_for(method, world, caller), known_values(world))
    drawn_requests = (
        st.lists(request, min_size=1, max_size=4) if method.client_streaming else st.tuples(request)
    ).map(Drawn)
    examples = examples_for(method, caller, world, HOSTILE_MESSAGE_EXAMPLES, TURNED_AWAY_EXAMPLES)

    @fuzz_settings(examples)
    @given(drawn=drawn_requests)
    def hostile_requests(drawn: Drawn) -> None:
        bodies = [message.SerializeToString() for message in drawn.messages]
        before = database.snapshot()
        outcome = invoke(channel, method, bodies, world.callers[caller])
        if not outcome.ok or method.name in READ_ONLY:
            assert database.snapshot() == before, f"{outcome.describe()} changed rows"
        if any(len(body) > MAX_MESSAGE_BYTES for body in bodies):
            _check_size_refusal(outcome)
        elif not any(known_bug(method, message, outcome) for message in drawn.messages):
            check_not_a_bug(outcome, gateway_process)
            check_no_leaks(outcome, sent=b"".join(bodies), world=world, gateway=gateway_process)
            check_described(outcome)
            check_admission(outcome, caller, world)
        check_serving(channel, gateway_process)

    hostile_requests()
