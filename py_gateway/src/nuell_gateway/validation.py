"""Request validation by the protovalidate rules declared in the proto.

The rules live once, in the contract, where every client can read them; the
gateway checks every incoming message against them before any other work
and reports every violation at once.
"""

from __future__ import annotations

from typing import Any

import protovalidate
from google.protobuf.message import Message

from nuell_gateway.codecs import Undecodable
from nuell_gateway.errors import FieldViolation, InvalidArgument

_validator = protovalidate.Validator()


def _field_path(violation: protovalidate.Violation) -> str:
    """`documents[3].id` style path of the violated field; empty for message rules."""
    path = violation.proto.field
    if path is None:
        return ""
    parts: list[str] = []
    for element in path.elements:
        part: str = element.field_name
        subscript: Any = element.subscript
        if subscript is not None:
            key = subscript.value
            part += f'["{key}"]' if isinstance(key, str) else f"[{key}]"
        parts.append(part)
    return ".".join(parts)


def validate_request(message: Message | Undecodable) -> Message:
    """`message` if it keeps every rule; else `InvalidArgument` listing each it breaks."""
    if isinstance(message, Undecodable):
        raise InvalidArgument(
            "the request body is not a valid message of the request type",
            reason="MALFORMED_REQUEST",
        )
    try:
        violations = _validator.collect_violations(message)
    except protovalidate.EvaluationError:
        # A rule ran out of its evaluation budget: the request is too big to
        # check, which is the caller's to fix, not a bug.
        raise InvalidArgument(
            "the request is too large to validate", reason="REQUEST_TOO_COMPLEX"
        ) from None
    if not violations:
        return message
    raise InvalidArgument(
        "the request breaks the rules of its fields",
        reason="INVALID_FIELDS",
        violations=[
            FieldViolation(
                field=_field_path(v),
                description=v.proto.message or v.proto.rule_id,
                reason=v.proto.rule_id,
            )
            for v in violations
        ],
    )
