"""Inputs with which the hostile-input properties found bugs, pinned as plain tests.

Each asserts what the gateway must answer to one input that once broke it,
so the bug stays fixed even if the properties' random choices move on.
A bug still open is a strict xfail, and its symptom is listed in
known_bugs.py; a fix fails the run until both are removed.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from nuell.auth.v1 import auth_service_pb2 as auth
from nuell.compute.v1 import compute_service_pb2 as compute
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users

from tests.fuzz.conftest import Database, GatewayProcess, World
from tests.fuzz.outcomes import Outcome, check_described, check_no_leaks, check_serving, invoke
from tests.fuzz.support import METHODS, method_id
from tests.utils.samples import STRONG_PASSWORD

# Long enough for any sane answer; a hang ends here instead of at the call timeout.
SHORT_TIMEOUT_SECONDS = 3.0


def _method(name: str) -> MethodDescriptor:
    return next(m for m in METHODS if m.name == name)


def _call(
    channel: grpc.Channel, world: World, caller: str, method: str, *requests: Message | bytes
) -> Outcome:
    bodies = [r if isinstance(r, bytes) else r.SerializeToString() for r in requests]
    return invoke(
        channel, _method(method), bodies, world.callers[caller], timeout=SHORT_TIMEOUT_SECONDS
    )


def _reason(outcome: Outcome) -> str | None:
    info = outcome.rich().error_info if not outcome.ok else None
    return info.reason if info else None


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# --- a body that does not parse --------------------------------------------------------
# Was UNKNOWN "Unexpected <class 'google.protobuf.message.DecodeError'>: ...", with no
# details and before authentication (grpc's answer to a raising deserializer).

# Field 1, wire type 7: no such wire type.
CORRUPT = b"\x0f\xff\xff"


@pytest.mark.parametrize("method", [m for m in METHODS if not m.client_streaming], ids=method_id)
def test_a_body_that_does_not_parse_is_invalid_argument(
    method: MethodDescriptor,
    channel: grpc.Channel,
    gateway_process: GatewayProcess,
    restored_world: World,
) -> None:
    outcome = _call(channel, restored_world, "admin", method.name, CORRUPT)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    check_described(outcome, fields_at_fault=False)
    check_no_leaks(outcome, sent=CORRUPT, world=restored_world, gateway=gateway_process)


# --- AnalyzeStream and a bad message ---------------------------------------------------
# Was a call left open until the caller's deadline (forever without one), with no log line.

GOOD = compute.AnalyzeStreamRequest(id="good", text="fine words here")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(compute.AnalyzeStreamRequest(id="bad", top_k=101), id="breaks-a-rule"),
        pytest.param(CORRUPT, id="does-not-parse"),
    ],
)
def test_a_bad_message_ends_analyze_stream_with_invalid_argument(
    bad: Message | bytes, channel: grpc.Channel, restored_world: World
) -> None:
    outcome = _call(channel, restored_world, "user", "AnalyzeStream", GOOD, bad)
    assert [compute.AnalyzeStreamResponse.FromString(r).id for r in outcome.replies] == ["good"]
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    check_described(outcome, fields_at_fault=isinstance(bad, Message))


# --- a known field number with the wrong wire type, forwarded to rust_compute ----------
# Was INVALID_ARGUMENT MALFORMED_REQUEST from rust_compute, with no field named:
# protobuf keeps such a field as unknown and re-sent it; prost refuses it.

# Field 1 (a string in every compute request) as a varint.
WRONG_WIRE_TYPE = b"\x08\x00"


@pytest.mark.parametrize(
    "method", [m for m in METHODS if m.containing_service.name == "ComputeService"], ids=method_id
)
def test_unknown_fields_are_not_forwarded_to_rust_compute(
    method: MethodDescriptor, channel: grpc.Channel, restored_world: World
) -> None:
    bodies = [GOOD.SerializeToString()] if method.client_streaming else []
    outcome = _call(channel, restored_world, "user", method.name, *bodies, WRONG_WIRE_TYPE)
    assert _reason(outcome) != "MALFORMED_REQUEST", outcome.describe()
    check_described(outcome)


# --- NUL in text bound for PostgreSQL --------------------------------------------------
# Was INTERNAL: psycopg.DataError "PostgreSQL text fields cannot contain NUL (0x00) bytes".


def _nul_cases(world: World) -> dict[str, tuple[str, str, Message]]:
    return {
        "CreatePost.content": (
            "user",
            "CreatePost",
            posts.CreatePostRequest(content="before\x00after"),
        ),
        "UpdatePost.post.content": (
            "user",
            "UpdatePost",
            posts.UpdatePostRequest(
                post=post_pb2.Post(id=world.post_id, content="edited\x00"),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
        ),
        "UpdateUser.user.display_name": (
            "user",
            "UpdateUser",
            users.UpdateUserRequest(
                user=user_pb2.User(id=str(world.user.id), display_name="Ada\x00"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
        ),
        "Login.email": (
            "anonymous",
            "Login",
            auth.LoginRequest(email="ada\x00@example.com", password=STRONG_PASSWORD),
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "CreatePost.content",
        "UpdatePost.post.content",
        "UpdateUser.user.display_name",
        "Login.email",
    ],
)
def test_nul_in_text_is_refused_and_changes_nothing(
    case: str, channel: grpc.Channel, database: Database, restored_world: World
) -> None:
    caller, method, request = _nul_cases(restored_world)[case]
    before = database.snapshot()
    outcome = _call(channel, restored_world, caller, method, request)
    # Login may instead say what it says for any account that does not exist.
    allowed = {grpc.StatusCode.INVALID_ARGUMENT}
    if method == "Login":
        allowed.add(grpc.StatusCode.UNAUTHENTICATED)
    assert outcome.code in allowed, outcome.describe()
    check_described(outcome)
    assert database.snapshot() == before


# --- etags of digits that int() refuses ------------------------------------------------
# Was INTERNAL: '²'.isdigit() is True, int('²') raises ValueError (convert.version_from_etag).

DIGIT_ETAG = "\u00b2-0"  # '²' is a digit to str.isdigit and nothing to int


def _etag_cases(world: World) -> dict[str, tuple[str, Message]]:
    return {
        "UpdateUser": (
            "user",
            users.UpdateUserRequest(
                user=user_pb2.User(id=str(world.user.id), display_name="Ada", etag=DIGIT_ETAG),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
        ),
        "UpdatePost": (
            "user",
            posts.UpdatePostRequest(
                post=post_pb2.Post(id=world.post_id, content="edited", etag=DIGIT_ETAG),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
        ),
        "DeletePost": ("user", posts.DeletePostRequest(id=world.post_id, etag=DIGIT_ETAG)),
    }


@pytest.mark.parametrize("method", ["UpdateUser", "UpdatePost", "DeletePost"])
def test_an_etag_of_non_decimal_digits_is_stale(
    method: str, channel: grpc.Channel, database: Database, restored_world: World
) -> None:
    caller, request = _etag_cases(restored_world)[method]
    before = database.snapshot()
    outcome = _call(channel, restored_world, caller, method, request)
    assert (outcome.code, _reason(outcome)) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH"), (
        outcome.describe()
    )
    assert database.snapshot() == before


# --- error details without bound -------------------------------------------------------
# Was one violation per bad path or item, each echoing it: trailers over grpc's default
# 8/16 KiB metadata limits, which a client sees as RESOURCE_EXHAUSTED "received metadata
# size exceeds ...".


def _many_violations(world: World) -> dict[str, tuple[str, Message, str]]:
    mask = field_mask_pb2.FieldMask(paths=["nope"] * 500)
    return {
        "UpdateUser": (
            "user",
            users.UpdateUserRequest(user=user_pb2.User(id=str(world.user.id)), update_mask=mask),
            "INVALID_UPDATE_MASK",
        ),
        "UpdatePost": (
            "user",
            posts.UpdatePostRequest(post=post_pb2.Post(id=world.post_id), update_mask=mask),
            "INVALID_UPDATE_MASK",
        ),
        "FindNearDuplicates": (
            "user",
            compute.FindNearDuplicatesRequest(
                documents=[compute.Document(id="", text="x")] * 500, threshold=0.5
            ),
            "INVALID_FIELDS",
        ),
    }


@pytest.mark.parametrize("method", ["UpdateUser", "UpdatePost", "FindNearDuplicates"])
def test_many_violations_still_reach_a_default_client_as_invalid_argument(
    method: str,
    channel: grpc.Channel,
    gateway_process: GatewayProcess,
    restored_world: World,
) -> None:
    caller, request, reason = _many_violations(restored_world)[method]
    outcome = _call(channel, restored_world, caller, method, request)
    assert (outcome.code, _reason(outcome)) == (grpc.StatusCode.INVALID_ARGUMENT, reason), (
        outcome.describe()
    )
    check_serving(channel, gateway_process)


# --- a large near-duplicate batch ------------------------------------------------------

# Within the contract (1 to 100,000 documents) and about 190 KB on the wire.
LARGE_BATCH = 10_000


def test_a_large_batch_within_the_contract_is_answered(
    channel: grpc.Channel, gateway_process: GatewayProcess, restored_world: World
) -> None:
    request = compute.FindNearDuplicatesRequest(
        documents=[compute.Document(id=str(n), text=f"w{n} x y") for n in range(LARGE_BATCH)],
        threshold=0.5,
    )
    outcome = invoke(
        channel,
        _method("FindNearDuplicates"),
        [request.SerializeToString()],
        restored_world.callers["user"],
    )
    # The comment on FindNearDuplicates allows RESOURCE_EXHAUSTED beyond the service's limits.
    assert outcome.code in {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, (
        outcome.describe()
    )
    check_described(outcome)
    check_serving(channel, gateway_process)
