"""Domain errors and their one translation into a gRPC status.

Servicers raise a `DomainError` subclass; the call boundary
(`boundary`) turns it into a status with `google.rpc` details
(ErrorInfo with a stable `reason`, BadRequest field violations) in
`grpc-status-details-bin`. Anything else that escapes a handler is a bug:
it is logged with its stack and answered INTERNAL with no detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# The ErrorInfo domain: which system produced the error.
ERROR_DOMAIN = "nuell.dev"
# Details travel in a trailer, and clients refuse trailers beyond 8-16 KiB:
# a reply lists at most this many violations, each description cut short.
MAX_VIOLATIONS = 25
MAX_DESCRIPTION_CHARS = 200


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule on one request field (a dotted path such as `post.content`)."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """An expected failure that the caller should see with a precise code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)

    def to_rpc_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` for this error, details included."""
        details = [
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        ]
        if self.violations:
            shown = self.violations[:MAX_VIOLATIONS]
            violations = [
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field[:MAX_DESCRIPTION_CHARS],
                    description=_shorten(v.description),
                    reason=v.reason,
                )
                for v in shown
            ]
            if len(self.violations) > len(shown):
                violations.append(
                    error_details_pb2.BadRequest.FieldViolation(
                        description=f"and {len(self.violations) - len(shown)} more",
                        reason="more_violations",
                    )
                )
            details.append(error_details_pb2.BadRequest(field_violations=violations))
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


def _shorten(text: str) -> str:
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text
    return text[: MAX_DESCRIPTION_CHARS - 1] + "…"


class InvalidArgument(DomainError):
    """The request itself is wrong, whatever the state of the system."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(DomainError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Valid credentials that do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The system is not in a state where this call can succeed."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict, such as a stale etag."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    """A quota or size limit was exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency (database, rust_compute) cannot be reached; safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    """The caller's deadline passed before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(DomainError):
    """The caller went away."""

    code = grpc.StatusCode.CANCELLED
    default_reason = "CANCELLED"


class RelayedStatus(DomainError):
    """A status rust_compute answered with, details and all, passed on as it is.

    Only statuses that rust_compute built itself (they carry its
    `google.rpc` details) are relayed; transport failures are translated,
    so no internal address or library message reaches a caller.
    """

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status

    def to_rpc_status(self) -> status_pb2.Status:
        return self.status


class Unimplemented(DomainError):
    """The RPC is part of the contract but not served yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


def internal_error_status() -> status_pb2.Status:
    """What a caller sees for a bug: nothing about its cause."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
