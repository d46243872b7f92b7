"""Calling any RPC with raw bodies, and what every answer to hostile input must satisfy."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from nuell_gateway.authz import POLICIES, ROLE_SCOPES
from tests.fuzz.conftest import (
    CALL_TIMEOUT_SECONDS,
    SERVING,
    GatewayProcess,
    Metadata,
    World,
    health_status,
)
from tests.utils.rpc import ErrorDetails, error_details, method_path

# Codes that mean a bug (INTERNAL, UNKNOWN) or a call left hanging (DEADLINE_EXCEEDED:
# no test here sets a deadline a well-behaved gateway could miss).
BUG_CODES = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
)
ERROR_DOMAINS = frozenset({"nuell.dev", "compute.nuell.dev"})
# The gateway's inbound message limit.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Things no reply may contain: stack traces, SQL and driver names, password
# hashes, Python internals.
FORBIDDEN = (
    "Traceback",
    'File "',
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE FROM",
    "psycopg",
    "sqlalchemy",
    "$argon2",
    "<class '",
)
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
# Replies that hand out tokens by design.
ISSUES_TOKENS = frozenset({"Login", "Refresh"})


@dataclass
class Outcome:
    """How one call ended, whatever its shape."""

    method: MethodDescriptor
    code: grpc.StatusCode
    details: str
    headers: tuple[tuple[str, str | bytes], ...] = ()
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    replies: list[bytes] = field(default_factory=list)
    error: Any = None  # the grpc.RpcError of a failed call

    @property
    def ok(self) -> bool:
        return bool(self.code == grpc.StatusCode.OK)

    def rich(self) -> ErrorDetails:
        """The google.rpc details of a failed call."""
        assert self.error is not None, "the call succeeded"
        return error_details(self.error)

    def describe(self) -> str:
        return f"{self.method.full_name}: {self.code.name} {self.details!r}"


def invoke(
    channel: grpc.Channel,
    method: MethodDescriptor,
    bodies: Sequence[bytes],
    metadata: Metadata,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> Outcome:
    """Send `bodies` as they are (one for a unary request) and collect the answer."""
    path = method_path(method)
    options: dict[str, Any] = {"metadata": metadata, "timeout": timeout}
    replies: list[bytes] = []
    call: Any
    try:
        if not method.client_streaming:
            (body,) = bodies
            if method.server_streaming:
                call = channel.unary_stream(path)(body, **options)
                call.initial_metadata()
                time.sleep(0.2)  # a refusal's status comes with its headers
                if not call.done():  # a watch, open as asked: it never ends by itself
                    call.cancel()
                    return Outcome(method, grpc.StatusCode.OK, "", tuple(call.initial_metadata()))
                replies.extend(call)
            else:
                reply, call = channel.unary_unary(path).with_call(body, **options)
                replies.append(reply)
        elif method.server_streaming:
            call = channel.stream_stream(path)(iter(bodies), **options)
            replies.extend(call)
        else:
            reply, call = channel.stream_unary(path).with_call(iter(bodies), **options)
            replies.append(reply)
    except grpc.RpcError as error:
        return Outcome(
            method=method,
            code=error.code(),
            details=error.details() or "",
            headers=tuple(error.initial_metadata() or ()),
            trailers=tuple(error.trailing_metadata() or ()),
            replies=replies,
            error=error,
        )
    return Outcome(
        method=method,
        code=call.code(),
        details=call.details() or "",
        headers=tuple(call.initial_metadata() or ()),
        trailers=tuple(call.trailing_metadata() or ()),
        replies=replies,
    )


def _blobs(outcome: Outcome) -> list[bytes]:
    """Everything the caller received, as bytes."""
    blobs = [outcome.details.encode()]
    for key, value in (*outcome.headers, *outcome.trailers):
        blobs.append(key.encode())
        blobs.append(value if isinstance(value, bytes) else value.encode())
    blobs.extend(outcome.replies)
    return blobs


def leaks(outcome: Outcome, *, sent: bytes, world: World, gateway: GatewayProcess) -> list[str]:
    """What the answer gives away that it must not; empty when nothing.

    A marker the caller sent itself (an echoed field, a stored post) is not
    a leak; a JWT is one unless it is the caller's own or the reply issues
    tokens by design.
    """
    forbidden = (*FORBIDDEN, gateway.compute_address, gateway.database_name)
    own_tokens = {token.encode() for token in world.tokens()}
    issues_tokens = outcome.ok and outcome.method.name in ISSUES_TOKENS
    found: list[str] = []
    for blob in _blobs(outcome):
        for marker in forbidden:
            needle = marker.encode()
            if needle in blob and needle not in sent:
                found.append(f"{marker!r} in {blob[:300]!r}")
        for token in JWT.findall(blob):
            if token not in own_tokens and token not in sent and not issues_tokens:
                found.append(f"a JWT in {blob[:300]!r}")
    return found


def check_no_leaks(outcome: Outcome, *, sent: bytes, world: World, gateway: GatewayProcess) -> None:
    found = leaks(outcome, sent=sent, world=world, gateway=gateway)
    assert not found, f"{outcome.describe()} leaks: {found}"


def check_not_a_bug(outcome: Outcome, gateway: GatewayProcess) -> None:
    assert outcome.code not in BUG_CODES, (
        f"{outcome.describe()}\n--- gateway log (last 4000 characters) ---\n{gateway.log()[-4000:]}"
    )


def check_described(outcome: Outcome, *, fields_at_fault: bool = True) -> None:
    """A failure carries an ErrorInfo with a reason; INVALID_ARGUMENT also says which fields.

    `fields_at_fault` is False for a body that does not parse: there is no
    field to name, so BadRequest violations are not required.
    """
    if outcome.ok:
        return
    rich = outcome.rich()
    assert rich.error_info is not None, f"{outcome.describe()} has no ErrorInfo"
    assert rich.error_info.reason, f"{outcome.describe()} has an ErrorInfo without a reason"
    assert rich.error_info.domain in ERROR_DOMAINS, outcome.describe()
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT and fields_at_fault:
        assert rich.violations, f"{outcome.describe()} has no BadRequest field violations"
        for violation in rich.violations:
            assert violation.reason, f"{outcome.describe()}: {violation} has no reason"


def check_admission(outcome: Outcome, caller: str, world: World) -> None:
    """No token, no entry; a token without the RPC's scope, no entry: whatever the body says."""
    policy = POLICIES[method_path(outcome.method)]
    if policy.scope is None:
        return
    if caller == "anonymous":
        expected = (grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN")
    else:
        role = world.user.role if caller == "user" else world.admin.role
        if policy.scope in ROLE_SCOPES[role]:
            return
        expected = (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    rich = outcome.rich() if not outcome.ok else None
    reason = rich.error_info.reason if rich and rich.error_info else None
    assert (outcome.code, reason) == expected, f"{outcome.describe()} (caller {caller})"


def check_serving(channel: grpc.Channel, gateway: GatewayProcess) -> None:
    assert gateway.alive(), f"the gateway exited:\n{gateway.log()[-4000:]}"
    assert health_status(channel) == SERVING
