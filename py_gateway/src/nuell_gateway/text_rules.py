"""The contract's shared text rules (`nuell.text.v1`), for the layers that run no CEL.

protovalidate applies the rules to every request. The database applies the
same character classes in CHECK constraints (`db/models.py`, the
migrations): each rule's expression is `this.matches('<class>')` with a
class of `\\uXXXX` escapes that PostgreSQL's regular expressions read as CEL
does, so the class is taken from the contract's descriptor here rather than
written a second time.
"""

from __future__ import annotations

import re
import unicodedata

from buf.validate import validate_pb2
from google.protobuf.descriptor import FieldDescriptor
from nuell.text.v1 import text_rules_pb2
from nuell.users.v1 import user_pb2

from nuell_gateway.errors import FieldViolation, InvalidArgument

_MATCHES = re.compile(r"this\.matches\('(\[[^']+\])'\)")


def _character_class(rule: FieldDescriptor) -> str:
    """The bracket class of a predefined rule's `this.matches('[...]')`."""
    (cel,) = rule.GetOptions().Extensions[validate_pb2.predefined].cel
    match = _MATCHES.search(cel.expression)
    if match is None:
        raise RuntimeError(f"{rule.full_name} is not a this.matches('[...]') rule")
    return match.group(1)


# Matches a character that shows (nuell.text.v1.visible): text without one is blank.
VISIBLE_CHARACTER = _character_class(text_rules_pb2.visible)
# Matches a control, line-break or invisible format character (nuell.text.v1.plain).
CONTROL_CHARACTER = _character_class(text_rules_pb2.plain)

_DISPLAY_NAME_MAX_CHARS: int = (
    user_pb2.User.DESCRIPTOR.fields_by_name["display_name"]
    .GetOptions()
    .Extensions[validate_pb2.field]
    .string.max_len
)


def display_name(value: str) -> str:
    """A display name that passed the contract's rules, in the NFC form it is stored in.

    NFC so that one name has one spelling (NFD input, as macOS file names
    and some Japanese input methods produce, compares and sorts like the
    composed form). NFC can lengthen a few rare strings, so the limit is
    checked again on the stored form.
    """
    normalized = unicodedata.normalize("NFC", value)
    if len(normalized) > _DISPLAY_NAME_MAX_CHARS:
        raise InvalidArgument(
            "the request breaks the rules of its fields",
            reason="INVALID_FIELDS",
            violations=[
                FieldViolation(
                    field="user.display_name",
                    description=f"must be at most {_DISPLAY_NAME_MAX_CHARS} characters in NFC",
                    reason="string.max_len",
                )
            ],
        )
    return normalized
