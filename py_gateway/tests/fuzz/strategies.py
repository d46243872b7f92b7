"""Hypothesis strategies for hostile requests, derived from the proto descriptors.

Every field of every request message gets values of its wire type chosen to
hurt: strings empty, huge (on both sides of each limit the contract
declares, in one- to four-byte characters), with NUL, control and format
characters, lookalike digits, injection fragments and values that exist on
the server (so that some requests get past validation and reach the
database); integers at their type's bounds; doubles NaN, infinite and
subnormal; enums outside their defined values; repeated fields with many
items; nested messages; field masks naming anything at all.

Requests come two ways: built field by field from nothing, and a valid
sample (tests/utils/samples.py) with some of its fields made hostile, which
gets further into each RPC. Raw bodies come as random bytes, as random
protobuf wire format (unknown field numbers, wrong wire types, bad lengths)
and as serialized requests that were then cut, flipped or extended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

T = TypeVar("T")

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# Lengths on both sides of every limit in the contract (code points or bytes):
# display_name 64, ids and etags 128, email 254, refresh token 256,
# page_token 512, post content 5,000, document text 64 KiB, texts 1 MiB.
LIMIT_LENGTHS = (
    63,
    64,
    65,
    128,
    129,
    254,
    255,
    256,
    257,
    512,
    513,
    5000,
    5001,
    65536,
    65537,
    1 << 20,
    (1 << 20) + 1,
)
# One-, two-, three- and four-byte UTF-8, whitespace and NUL.
HUGE_FILL = ("a", "é", "語", "\U0001f600", " ", "\x00")
# The most a single huge string may weigh, so one request stays near 4 MiB.
MAX_HUGE_BYTES = (1 << 20) + 4

TRICKY_STRINGS = (
    "",
    " ",
    "\t\r\n",
    "\x00",
    "a\x00b",
    "\x00\x00\x00",
    "\x7f\x1b[31m",
    "\u200b",
    "\ufeff",
    "\u202eevil",
    "\u2028\u2029",
    "\ufffd\ufffe\uffff",
    "\U0010ffff",
    "e\u0301",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\u0130\u00df\u03a3",
    "\ufb00\u2460\u00b2",
    "\u00b2",
    "\u00b2-0",
    "\u2460-abc",
    "\u0661\u0662-x",
    "\uff11\uff12",
    "1-",
    "-",
    "0-000000000000",
    "99999999999999999999-0",
    "1" * 19,
    "%",
    "_",
    "\\",
    "'",
    '"',
    "' OR '1'='1",
    "'; DROP TABLE users; --",
    "%s%s%n",
    "%(id)s",
    "{0}{}",
    "${jndi:ldap://x}",
    "../../../etc/passwd",
    "<script>alert(1)</script>",
    "null",
    "NaN",
    "-1",
    "*",
    ".",
    "..",
    "a.b.c",
    "e30.e30",
    "e30",
    "=",
)

UUID_LIKE = (
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "01936F0E-3C2A-7B4D-8E5F-0123456789AB",
    "{01936f0e-3c2a-7b4d-8e5f-0123456789ab}",
    "urn:uuid:01936f0e-3c2a-7b4d-8e5f-0123456789ab",
    "01936f0e3c2a7b4d8e5f0123456789ab",
    "01936f0e-3c2a-7b4d-8e5f-0123456789a",
    "01936f0e-3c2a-7b4d-8e5f-0123456789abc",
    " 01936f0e-3c2a-7b4d-8e5f-0123456789ab",
    "01936f0e-3c2a-7b4d-8e5f-0123456789a\u0431",
    "\uff10" * 8 + "-0000-0000-0000-000000000000",
)

EMAIL_LIKE = (
    "a@b.co",
    "ADA@EXAMPLE.COM",
    " ada@example.com",
    "ada@example.com ",
    "ada@@example.com",
    "@example.com",
    "ada@",
    "ada@localhost",
    "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + ("b" * 60 + ".") * 4 + "com",
    '"quoted local"@example.com',
    "ada+tag@example.com",
    "ada@[127.0.0.1]",
)

FLOATS = (
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    5e-324,
    2.2250738585072014e-308,
    1.0,
    1.0000000000000002,
    0.9999999999999999,
    -1.0,
    1.7976931348623157e308,
)


@dataclass(frozen=True)
class Known:
    """Values that exist on the server, so some hostile requests reach deep paths."""

    ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()
    etags: tuple[str, ...] = ()


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of `choices`, picked in proportion to its weight."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def _huge(fill: str, length: int) -> str:
    # Keeps a single string near the largest limit (1 MiB of UTF-8).
    return fill * min(length, MAX_HUGE_BYTES // len(fill.encode()))


def huge_strings() -> st.SearchStrategy[str]:
    return st.builds(_huge, st.sampled_from(HUGE_FILL), st.sampled_from(LIMIT_LENGTHS))


def odd_text() -> st.SearchStrategy[str]:
    """Short text of control, format, separator and combining characters."""
    return st.text(
        st.characters(categories=["Cc", "Cf", "Co", "Zs", "Zl", "Zp", "Mn", "Me", "No"]),
        max_size=16,
    )


def _with_affix(value: str, affix: str, before: bool) -> str:
    return affix + value if before else value + affix


def near(values: Sequence[str]) -> st.SearchStrategy[str]:
    """Real values, as they are or with something stuck to them."""
    exact = st.sampled_from(values)
    changed = st.builds(
        _with_affix,
        exact,
        st.sampled_from(("\x00", " ", "\n", "x", "\u200b", "%")),
        st.booleans(),
    )
    return weighted((3, exact), (1, changed), (1, exact.map(str.upper)))


def strings(field_name: str, known: Known) -> st.SearchStrategy[str]:
    """A hostile value for a string field, with extra values suited to its name."""
    generic: list[tuple[int, st.SearchStrategy[str]]] = [
        (4, st.sampled_from(TRICKY_STRINGS)),
        (3, st.text(max_size=40)),
        (2, odd_text()),
        (1, huge_strings()),
    ]
    name = field_name.lower()
    specific: list[st.SearchStrategy[str]] = []
    if name == "id" or name.endswith("_id") or name.endswith("_ids"):
        specific += [st.uuids().map(str), st.sampled_from(UUID_LIKE)]
        if known.ids:
            specific += [near(known.ids), st.sampled_from(known.ids)]
    if "email" in name:
        specific.append(st.sampled_from(EMAIL_LIKE))
        if known.emails:
            specific.append(near(known.emails))
    if "password" in name:
        specific.append(
            st.builds(
                lambda head, tail: head + tail,
                st.sampled_from(("Aa1!", "Correct-Horse-42", "\u00c4\u00e4\u0661!")),
                st.text(max_size=130),
            )
        )
        if known.passwords:
            specific.append(near(known.passwords))
    if name == "etag" and known.etags:
        specific.append(near(known.etags))
    if "token" in name:
        specific.append(
            st.builds(
                lambda a, b: f"{a}.{b}",
                st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="),
                st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="),
            )
        )
    return weighted(*generic, *[(3, strategy) for strategy in specific])


def integers(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = sorted(
        {
            v
            for v in (low, low + 1, -1, 0, 1, 10, 100, 101, 1000, high - 1, high)
            if low <= v <= high
        }
    )
    return weighted((1, st.sampled_from(edges)), (1, st.integers(low, high)))


def doubles(width: int = 64) -> st.SearchStrategy[float]:
    special = [v for v in FLOATS if width == 64 or not math.isfinite(v) or abs(v) < 3.4e38]
    return weighted((1, st.sampled_from(special)), (1, st.floats(width=width)))  # type: ignore[arg-type]


_INTEGER_BOUNDS: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}

FIELD_MASK = "google.protobuf.FieldMask"
MAX_DEPTH = 3


def _mask_paths(target_fields: Sequence[str], known: Known) -> st.SearchStrategy[list[str]]:
    names = sorted(
        {
            *target_fields,
            *(f"user.{n}" for n in target_fields),
            *(f"{n}.x" for n in target_fields),
            *(n.upper() for n in target_fields),
            "*",
            "",
            "displayName",
            "analysis.state",
            "nope",
        }
    )
    path = weighted((4, st.sampled_from(names)), (1, strings("path", known)))
    return weighted(
        (6, st.lists(path, max_size=5)),
        (1, st.builds(lambda p, n: [p] * n, path, st.sampled_from((100, 1000)))),
    )


def scalar(field: FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    """A hostile value for one non-message field."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return strings(field.name, known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return doubles()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return doubles(width=32)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = [value.number for value in field.enum_type.values]
        return weighted((2, st.sampled_from(defined)), (1, integers(INT32)))
    if kind in _INTEGER_BOUNDS:
        return integers(_INTEGER_BOUNDS[kind])
    raise NotImplementedError(f"no strategy for {field.full_name} (type {kind})")


def _many(item: Any, count: int) -> list[Any]:
    """`count` copies of `item`, fewer if they would weigh more than ~4.5 MiB."""
    weight = item.ByteSize() if isinstance(item, Message) else len(str(item).encode())
    return [item] * max(1, min(count, 4_500_000 // (weight + 4)))


def field_values(
    field: FieldDescriptor, known: Known, depth: int, siblings: Sequence[str]
) -> st.SearchStrategy[Any]:
    """A value for `field` (a list for repeated fields)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if _message_type(field).full_name == FIELD_MASK:
            return _mask_paths(siblings, known).map(_field_mask)
        single: st.SearchStrategy[Any] = messages(_message_type(field), known, depth + 1)
    else:
        single = scalar(field, known)
    if not field.is_repeated:
        return single
    return weighted(
        (6, st.lists(single, max_size=4)),
        (1, st.builds(_many, single, st.sampled_from((100, 1000, 20_000)))),
    )


def _field_mask(paths: list[str]) -> Message:
    return field_mask_pb2.FieldMask(paths=paths)


def _sibling_fields(descriptor: Descriptor) -> list[str]:
    """Field names of the message fields next to a mask: what a mask could name."""
    return [
        name
        for field in descriptor.fields
        if field.type == FieldDescriptor.TYPE_MESSAGE
        and _message_type(field).full_name != FIELD_MASK
        for name in _message_type(field).fields_by_name
    ]


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def descriptor_of(message: Message) -> Descriptor:
    return cast(Descriptor, message.DESCRIPTOR)


def set_field(message: Message, field: FieldDescriptor, value: Any) -> None:
    message.ClearField(field.name)
    if field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _assemble(descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = GetMessageClass(descriptor)()
    for name, value in values.items():
        set_field(message, descriptor.fields_by_name[name], value)
    return message


def messages(descriptor: Descriptor, known: Known, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message of `descriptor`'s type built field by field; each field may be absent."""
    if depth > MAX_DEPTH:
        return st.just(GetMessageClass(descriptor)())
    siblings = _sibling_fields(descriptor)
    optional = {
        field.name: field_values(field, known, depth, siblings) for field in descriptor.fields
    }
    return st.fixed_dictionaries({}, optional=optional).map(
        lambda values: _assemble(descriptor, values)
    )


@st.composite
def mutated(draw: st.DrawFn, sample: Message, known: Known, depth: int = 0) -> Message:
    """`sample` with one or more of its fields replaced by hostile values."""
    message = type(sample)()
    message.CopyFrom(sample)
    descriptor = descriptor_of(sample)
    fields = list(descriptor.fields)
    if not fields:
        return message
    siblings = _sibling_fields(descriptor)
    # Mostly one field at a time, so the rest of the request stays valid and the
    # hostile value gets as far into the RPC as it can.
    count = draw(weighted((4, st.just(1)), (1, st.integers(1, len(fields)))))
    chosen = draw(st.lists(st.sampled_from(fields), min_size=count, max_size=count, unique=True))
    for field in chosen:
        nested = (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.is_repeated
            and _message_type(field).full_name != FIELD_MASK
            and sample.HasField(field.name)
        )
        if nested and depth < MAX_DEPTH and draw(st.booleans()):
            inner = draw(mutated(getattr(sample, field.name), known, depth + 1))
            set_field(message, field, inner)
        else:
            set_field(message, field, draw(field_values(field, known, depth, siblings)))
    return message


def requests(sample: Message, known: Known) -> st.SearchStrategy[Message]:
    """Hostile requests of `sample`'s type: from scratch, or `sample` made hostile."""
    return weighted((1, messages(descriptor_of(sample), known)), (2, mutated(sample, known)))


# --- raw bodies -----------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _wire_field(number: int, wire_type: int, payload: bytes, declared: int | None) -> bytes:
    key = varint((number << 3) | wire_type)
    if wire_type == 2:
        length = len(payload) if declared is None else declared
        return key + varint(length) + payload
    if wire_type == 0:
        return key + (payload[:10] or b"\x00")
    if wire_type == 1:
        return key + payload[:8].ljust(8, b"\x00")
    if wire_type == 5:
        return key + payload[:4].ljust(4, b"\x00")
    return key + payload  # groups (3, 4) and the undefined 6 and 7


def wire_format() -> st.SearchStrategy[bytes]:
    """Random protobuf records: any field number, any wire type, lengths that lie."""
    record = st.builds(
        _wire_field,
        weighted((3, st.integers(1, 8)), (1, st.integers(1, (1 << 29) - 1))),
        st.integers(0, 7),
        st.binary(max_size=24),
        st.one_of(st.none(), st.integers(0, 1 << 31)),
    )
    return st.lists(record, max_size=6).map(b"".join)


def _cut(body: bytes, at: int) -> bytes:
    return body[: at % (len(body) + 1)]


def _flip(body: bytes, at: int, bits: int) -> bytes:
    if not body:
        return bytes([bits])
    index = at % len(body)
    return body[:index] + bytes([body[index] ^ bits]) + body[index + 1 :]


def damaged(request: st.SearchStrategy[Message]) -> st.SearchStrategy[bytes]:
    """Serialized requests, then truncated, bit-flipped or extended with junk."""
    serialized = request.map(lambda message: message.SerializeToString())
    return st.one_of(
        st.builds(_cut, serialized, st.integers(0, 1 << 16)),
        st.builds(_flip, serialized, st.integers(0, 1 << 16), st.integers(1, 255)),
        st.builds(lambda body, junk: body + junk, serialized, st.binary(min_size=1, max_size=16)),
    )


# Raw bodies stay small: their point is the bytes, not the size.
MAX_RAW_BYTES = 4096


def raw_bodies(sample: Message, known: Known) -> st.SearchStrategy[bytes]:
    """Bodies that may or may not parse as `sample`'s type."""
    return weighted(
        (2, st.binary(max_size=256)),
        (2, wire_format()),
        (2, damaged(mutated(sample, known)).map(lambda body: body[:MAX_RAW_BYTES])),
    )
