"""Request ids and trace context that cannot be echoed are replaced, never echoed.

An `x-request-id` of non-ASCII bytes used to be kept (`str.isprintable()`),
echoed in the trailers, refused by grpc core, and the call failed with
INTERNAL "Invalid metadata". grpcio's own client will not send such bytes,
so the real grpcurl does, as an attacker's client would.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import grpc
import pytest
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.utils.factories import bearer, make_user

GRPCURL = Path(sys.executable).parent / "grpcurl"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
FRESH_ID = re.compile(r"[0-9a-f]{32}")

# Raw header values, as bytes on the wire.
UNECHOABLE_REQUEST_IDS = [
    "café".encode(),
    b"caf\xe9",
    "リクエスト-1".encode(),
    "req-\u202e1".encode(),
    b"\xff\xfe",
    b"x" * 129,
]
NOT_W3C_TRACEPARENTS = [
    f"{TRACEPARENT[:-1]}\u00e9".encode(),
    TRACEPARENT.encode() + b"\xe9",
    TRACEPARENT.upper().encode(),
    f"ff{TRACEPARENT[2:]}".encode(),
    f"{TRACEPARENT}-extra".encode(),
]


async def _grpcurl(port: int, *headers: bytes) -> tuple[int, dict[str, str]]:
    """Call GetCurrentUser with these raw headers; (exit code, response trailers)."""
    args: list[bytes] = [b"-plaintext", b"-v", b"-format-error"]
    for header in headers:
        args += [b"-H", header]
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        *args,
        f"127.0.0.1:{port}".encode(),
        b"nuell.users.v1.UserService/GetCurrentUser",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    output = (stdout + stderr).decode("utf-8", "replace")
    trailers_section = output.partition("Response trailers received:\n")[2]
    trailers = {}
    for line in trailers_section.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            break
        trailers[key] = value
    assert trailers, output
    assert "Invalid metadata" not in output, output
    return process.returncode or 0, trailers


@pytest.mark.parametrize("request_id", UNECHOABLE_REQUEST_IDS)
async def test_an_unechoable_request_id_is_replaced_and_the_call_succeeds(
    gateway: Gateway, resources: Resources, request_id: bytes
) -> None:
    ((_, token),) = bearer(resources.access_tokens, await make_user(resources.sessions))
    code, trailers = await _grpcurl(
        gateway.port, b"x-request-id: " + request_id, b"authorization: " + token.encode()
    )
    assert code == 0, trailers
    assert FRESH_ID.fullmatch(trailers["x-request-id"]), trailers

    # And on an error path: no token, UNAUTHENTICATED, not INTERNAL.
    code, trailers = await _grpcurl(gateway.port, b"x-request-id: " + request_id)
    assert code != 0
    assert FRESH_ID.fullmatch(trailers["x-request-id"]), trailers


@pytest.mark.parametrize("traceparent", NOT_W3C_TRACEPARENTS)
async def test_a_traceparent_that_is_not_w3c_starts_a_new_trace(
    gateway: Gateway, resources: Resources, traceparent: bytes
) -> None:
    ((_, token),) = bearer(resources.access_tokens, await make_user(resources.sessions))
    code, trailers = await _grpcurl(
        gateway.port,
        b"traceparent: " + traceparent,
        b"x-request-id: kept-1",
        b"authorization: " + token.encode(),
    )
    assert code == 0, trailers
    assert trailers["x-request-id"] == "kept-1"
    version, trace_id, span_id, flags = trailers["traceparent"].split("-")
    assert (version, len(span_id), flags) == ("00", 16, "01")
    assert trace_id != TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req 1", True),
        ("~!#$%&'()*+,-./:;<=>?@[]^_`{|}", True),
        ("r" * 128, True),
        (" leading", False),
        ("trailing ", False),
    ],
)
async def test_request_ids_are_printable_ascii_without_padding(
    channel: grpc.aio.Channel, resources: Resources, sent: str, kept: bool
) -> None:
    me = bearer(resources.access_tokens, await make_user(resources.sessions))
    call = UserServiceStub(channel).GetCurrentUser(
        users_pb.GetCurrentUserRequest(), metadata=(*me, ("x-request-id", sent))
    )
    await call
    returned = dict(await call.trailing_metadata())["x-request-id"]
    if kept:
        assert returned == sent
    else:
        assert FRESH_ID.fullmatch(returned), returned


async def test_a_later_traceparent_version_continues_the_trace(
    channel: grpc.aio.Channel, resources: Resources
) -> None:
    me = bearer(resources.access_tokens, await make_user(resources.sessions))
    call = UserServiceStub(channel).GetCurrentUser(
        users_pb.GetCurrentUserRequest(),
        metadata=(*me, ("traceparent", f"cc{TRACEPARENT[2:-2]}ff-what-comes-next")),
    )
    await call
    version, trace_id, _, flags = dict(await call.trailing_metadata())["traceparent"].split("-")
    # Read by the version 00 layout; flags this gateway does not know are cleared.
    assert (version, trace_id, flags) == ("00", TRACE_ID, "03")
