"""A write the database refused, as a status the caller can act on.

Requests are validated by the contract's rules before any work, and the
CHECK constraints are the same rules, so a refusal here means a rule the
two layers do not share (a bug to fix), or a race such as a unique value
taken meanwhile. Either way the caller gets a precise status with details,
never INTERNAL; the log names the constraint and the SQLSTATE, never the
row, which PostgreSQL's error text quotes in full.
"""

from __future__ import annotations

import logging
from functools import cache

import psycopg
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc

from nuell_gateway.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)

logger = logging.getLogger(__name__)

# Integrity (SQLSTATE class 23) and data (class 22) errors: the values broke a rule.
REFUSED_WRITE = (sa_exc.IntegrityError, sa_exc.DataError, psycopg.IntegrityError, psycopg.DataError)

# The constraints that state a contract rule on a request field: (field, rule id, description).
_CONTRACT_RULES: dict[str, tuple[str, str, str]] = {
    "ck_posts_content_not_blank": (
        "content",
        "content.not_blank",
        "must contain a visible character, not only spaces, line breaks or invisible characters",
    ),
    "ck_posts_content_length": ("content", "string.len", "must be 1 to 5000 characters"),
    "ck_users_display_name_not_blank": (
        "display_name",
        "content.not_blank",
        "must contain a visible character when set",
    ),
    "ck_users_display_name_plain": (
        "display_name",
        "text.no_control_characters",
        "must not contain control characters, line breaks, bidirectional overrides "
        "or other invisible format characters",
    ),
    "ck_users_display_name_length": (
        "display_name",
        "string.max_len",
        "must be at most 64 characters",
    ),
    "ck_users_display_name_nfc": ("display_name", "text.nfc", "must be in Unicode NFC"),
    "ck_users_email_shape": ("email", "string.email", "must be an email address"),
}


def refused_write(exc: BaseException, method: str) -> DomainError:
    """The status for `exc` (one of REFUSED_WRITE) raised while serving `method`."""
    error = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    diag = getattr(error, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    sqlstate = getattr(error, "sqlstate", None) or ""
    logger.warning(
        "the database refused a write that passed validation",
        extra={"method": method, "sqlstate": sqlstate, "constraint": constraint},
    )
    if isinstance(error, pg_errors.UniqueViolation):
        return AlreadyExists("a resource with this value exists already", reason="ALREADY_EXISTS")
    rule = _CONTRACT_RULES.get(constraint)
    if rule is None:
        return FailedPrecondition(
            "the database refused the change; nothing was changed",
            reason="CONSTRAINT_VIOLATED",
        )
    field, rule_id, description = rule
    return InvalidArgument(
        "the request breaks the rules of its fields",
        reason="INVALID_FIELDS",
        violations=[FieldViolation(_field_path(method, field), description, rule_id)],
    )


def _field_path(method: str, name: str) -> str:
    """Where the request of `method` carries field `name`: `content`, `post.content`, ..."""
    service, _, rpc = method.lstrip("/").rpartition("/")
    try:
        request = descriptor_pool.Default().FindMethodByName(f"{service}.{rpc}").input_type
    except KeyError:
        return name
    return _find(request, name) or name


@cache
def _find(message: Descriptor, name: str, depth: int = 2) -> str | None:
    if name in message.fields_by_name:
        return name
    if depth == 0:
        return None
    for field in message.fields:
        if field.message_type is not None:
            inner = _find(field.message_type, name, depth - 1)
            if inner is not None:
                return f"{field.name}.{inner}"
    return None
