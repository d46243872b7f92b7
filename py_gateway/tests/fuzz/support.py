"""What the properties share: the RPCs, their samples, the values worth aiming at."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from nuell_gateway.authz import POLICIES, ROLE_SCOPES
from tests.fuzz.conftest import World
from tests.fuzz.strategies import Known
from tests.utils.rpc import contract_methods, method_path
from tests.utils.samples import SOME_ID, STRONG_PASSWORD, VALID_REQUESTS

METHODS = contract_methods()


class Drawn:
    """Drawn requests, shown briefly when Hypothesis reports a failing example."""

    LIMIT = 2000

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = list(messages)

    def __repr__(self) -> str:
        text = " | ".join(
            f"{type(m).__name__}({text_format.MessageToString(m, as_one_line=True)})"
            for m in self.messages
        )
        if len(text) <= self.LIMIT:
            return text
        return f"{text[: self.LIMIT]}... ({len(text)} characters in all)"


def decode(method: MethodDescriptor, body: bytes) -> Message | None:
    """`body` as the method's request, or None if it does not parse."""
    message = GetMessageClass(method.input_type)()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    return message


def method_id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def sample_for(method: MethodDescriptor, world: World, caller: str) -> Message:
    """The method's valid sample, aimed at rows that exist: the caller's account, the post."""
    sample = VALID_REQUESTS[method_path(method).lstrip("/")]
    aimed = type(sample)()
    aimed.CopyFrom(sample)
    if method.containing_service.name == "PostService":
        target = world.post_id
    else:
        target = str(world.admin.id if caller == "admin" else world.user.id)
    _replace_strings(aimed, SOME_ID, target)
    return aimed


def _replace_strings(message: Message, old: str, new: str) -> None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            _replace_strings(value, old, new)
        elif field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated and value == old:
            setattr(message, field.name, new)


def known_values(world: World) -> Known:
    """Ids, emails, a password and an etag that exist on the server."""
    return Known(
        ids=(str(world.user.id), str(world.admin.id), world.post_id),
        emails=(world.user.email, world.admin.email),
        passwords=(STRONG_PASSWORD,),
        etags=(world.post_etag,),
    )


def turned_away(method: MethodDescriptor, caller: str, world: World) -> bool:
    """Whether `caller` is refused before the request body matters."""
    scope = POLICIES[method_path(method)].scope
    if scope is None:
        return False
    if caller == "anonymous":
        return True
    role = world.user.role if caller == "user" else world.admin.role
    return scope not in ROLE_SCOPES[role]


def examples_for(
    method: MethodDescriptor, caller: str, world: World, full: int, turned_away_count: int
) -> int:
    return turned_away_count if turned_away(method, caller, world) else full
