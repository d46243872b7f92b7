"""Domain errors: every expected failure, in terms a caller can act on.

Domain modules, stores and servicers raise a `DomainError` subclass. Each
carries a canonical code from google.rpc's `code_pb2` (the codes every gRPC
implementation shares, so this module needs no grpc), a stable `reason`,
metadata and field violations. The call boundary (`boundary`) is the one
place that turns an error into a gRPC status with `google.rpc` details
(ErrorInfo, BadRequest) in `grpc-status-details-bin`. Anything else that
escapes a handler is a bug: logged with its stack, answered INTERNAL with
no detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.rpc import code_pb2, status_pb2


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule on one request field (a dotted path such as `post.content`)."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """An expected failure that the caller should see with a precise code."""

    code: int = code_pb2.UNKNOWN  # a google.rpc.Code value
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        # Sent as google.rpc.RetryInfo: when a retry can succeed.
        self.retry_after_seconds = retry_after_seconds


class InvalidArgument(DomainError):
    """The request itself is wrong, whatever the state of the system."""

    code = code_pb2.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(DomainError):
    """No valid credentials."""

    code = code_pb2.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Valid credentials that do not allow this call."""

    code = code_pb2.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    """The named resource does not exist."""

    code = code_pb2.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource to create exists already."""

    code = code_pb2.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state where this call can succeed."""

    code = code_pb2.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict, such as a stale etag."""

    code = code_pb2.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    """A quota or size limit was exceeded."""

    code = code_pb2.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class OutOfRange(DomainError):
    """A position the service no longer holds (a resume token past the retention)."""

    code = code_pb2.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class Unavailable(DomainError):
    """A dependency (database, rust_compute) cannot be reached; safe to retry."""

    code = code_pb2.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    """The caller's deadline passed before the work was done."""

    code = code_pb2.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(DomainError):
    """The caller went away."""

    code = code_pb2.CANCELLED
    default_reason = "CANCELLED"


class RelayedStatus(DomainError):
    """A status rust_compute answered with, details and all, passed on as it is.

    Only statuses that rust_compute built itself (they carry its
    `google.rpc` details) are relayed; transport failures are translated,
    so no internal address or library message reaches a caller.
    """

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.code = status.code
        self.status = status


class Unimplemented(DomainError):
    """The RPC is part of the contract but not served yet."""

    code = code_pb2.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"
