"""The OpenAPI 3.1 document of the edge's REST/JSON API, made from the contract.

    python -m nuell_gateway.openapi build/contract.binpb [--out FILE]

`make gen` writes it to build/openapi.json, which the edge serves at
/openapi.json and the page server at /api/openapi.json.

The edge transcodes the paths that the contract's RPCs declare with
`google.api.http` to gRPC, with the proto3 JSON mapping: lowerCamelCase
names, fields at their default value left out, 64-bit integers as strings,
enums by name, Timestamp as RFC 3339 and FieldMask as a comma-separated
string. `document()` describes exactly that from the descriptor set
(`make gen` writes it, comments included): one operation per HTTP rule,
the proto comments as descriptions, and the protovalidate rules that JSON
Schema can state as constraints, and which calls need a token from
`authz.POLICIES`. The output depends on the contract and that table alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buf.validate import validate_pb2  # type: ignore[import-untyped, unused-ignore]
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import descriptor_pb2

from nuell_gateway.authz import POLICIES

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerAuth"
# Every call may answer one of these; the 200 answer is the RPC's response.
ERROR_RESPONSE = "Error"
STATUS_SCHEMA = "Status"
# Messages a `Status` may carry in `details`.
ERROR_DETAILS_FILE = "google/rpc/error_details.proto"

# RPCs callable without an access token, as `package.Service/Method`.
PUBLIC_METHODS: frozenset[str] = frozenset(
    name.lstrip("/") for name, policy in POLICIES.items() if policy.public
)

# Field numbers in descriptor.proto, for source_code_info paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

# Well-known types with a JSON form of their own (the proto3 JSON mapping).
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "An RFC 3339 date and time in UTC, e.g. `2026-01-02T03:04:05.678Z`.",
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with an `s` suffix, e.g. `1.5s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Field paths in lowerCamelCase, separated by commas, e.g. `content`.",
    },
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"], "format": "float"},
    "google.protobuf.DoubleValue": {"type": ["number", "null"], "format": "double"},
}
# Well-known types a query parameter can carry as one string.
_QUERY_WELL_KNOWN = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}

_T = FieldProto
_SCALARS: dict[int, Schema] = {
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    _T.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    # 64-bit integers are strings in JSON: a JavaScript number cannot hold them.
    _T.TYPE_INT64: {"type": "string", "format": "int64"},
    _T.TYPE_SINT64: {"type": "string", "format": "int64"},
    _T.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _T.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _T.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Which protovalidate rules apply to which field type.
_NUMERIC_RULES: dict[int, str] = {
    _T.TYPE_DOUBLE: "double",
    _T.TYPE_FLOAT: "float",
    _T.TYPE_INT32: "int32",
    _T.TYPE_SINT32: "sint32",
    _T.TYPE_SFIXED32: "sfixed32",
    _T.TYPE_UINT32: "uint32",
    _T.TYPE_FIXED32: "fixed32",
}
_STRING_FORMATS = {
    "uuid": "uuid",
    "email": "email",
    "hostname": "hostname",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "uri": "uri",
    "uri_ref": "uri-reference",
}

_INTRO = """\
Nuell's REST/JSON API: the gRPC contract (proto/nuell) served by the edge \
over HTTP with JSON bodies. Requests and responses follow the proto3 JSON \
mapping: field names in lowerCamelCase, fields at their default value (0, \
"", false, empty lists, the enum's zero value) left out of responses, \
64-bit integers as strings, enums by value name, timestamps in RFC 3339 and \
field masks as comma-separated lowerCamelCase paths. A query parameter the \
request message does not declare is refused.

Calls that need an access token take it as `Authorization: Bearer <access \
token>` (AuthService.Login and VerifyMfa issue one).

Errors are a `google.rpc.Status` (the `Status` schema): the gRPC code, a \
message and typed details such as `google.rpc.BadRequest` (a field violation \
per broken rule) and `google.rpc.ErrorInfo` (a stable `reason`). The HTTP \
status follows the code: INVALID_ARGUMENT, FAILED_PRECONDITION and \
OUT_OF_RANGE 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, \
ALREADY_EXISTS and ABORTED 409, RESOURCE_EXHAUSTED 429, CANCELLED 499, \
UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, INTERNAL, \
UNKNOWN and DATA_LOSS 500."""


class ContractError(ValueError):
    """The descriptor set is not a contract this module can describe."""


@dataclass(frozen=True)
class _Node:
    """A message or enum of the contract, where its comments are found."""

    proto: descriptor_pb2.DescriptorProto | descriptor_pb2.EnumDescriptorProto
    file: str
    path: tuple[int, ...]


@dataclass
class _Contract:
    messages: dict[str, _Node] = field(default_factory=dict)
    enums: dict[str, _Node] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")

    def message(self, full_name: str) -> descriptor_pb2.DescriptorProto:
        proto = self.messages[full_name].proto
        assert isinstance(proto, descriptor_pb2.DescriptorProto)
        return proto


def _clean_comment(text: str) -> str:
    """A proto comment as prose: the `//` indent gone, lint directives dropped."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines()]
    kept = [line.rstrip() for line in lines if not line.strip().startswith("buf:lint:")]
    return "\n".join(kept).strip()


def _index(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> _Contract:
    contract = _Contract()

    def add_enum(
        enum: descriptor_pb2.EnumDescriptorProto, scope: str, file: str, path: tuple[int, ...]
    ) -> None:
        contract.enums[f"{scope}.{enum.name}"] = _Node(enum, file, path)

    def add_message(
        message: descriptor_pb2.DescriptorProto, scope: str, file: str, path: tuple[int, ...]
    ) -> None:
        name = f"{scope}.{message.name}"
        contract.messages[name] = _Node(message, file, path)
        for i, nested in enumerate(message.nested_type):
            add_message(nested, name, file, (*path, _MESSAGE_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            add_enum(enum, name, file, (*path, _MESSAGE_ENUM, i))

    for file in files:
        scope = file.package
        for i, message in enumerate(file.message_type):
            add_message(message, scope, file.name, (_FILE_MESSAGE, i))
        for i, enum in enumerate(file.enum_type):
            add_enum(enum, scope, file.name, (_FILE_ENUM, i))
        for location in file.source_code_info.location:
            if location.leading_comments:
                text = _clean_comment(location.leading_comments)
                if text:
                    contract.comments[(file.name, tuple(location.path))] = text
    return contract


def _json_name(field_proto: FieldProto) -> str:
    if field_proto.json_name:
        return field_proto.json_name
    head, *rest = field_proto.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _ref(full_name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{full_name}"}


def _summary(description: str) -> str:
    """The first sentence of a comment, for an operation's one-line summary."""
    first_paragraph = " ".join(description.split("\n\n", 1)[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", first_paragraph)
    return match.group(1) if match else first_paragraph


class _Builder:
    """Collects the schemas that operations reach, one component per type."""

    def __init__(self, contract: _Contract) -> None:
        self.contract = contract
        self.schemas: dict[str, Schema] = {}
        self._pending: list[str] = []

    # Types ------------------------------------------------------------

    def type_schema(self, type_name: str) -> Schema:
        """A $ref to a message or enum (queued for components), or a
        well-known type's JSON form inline."""
        name = type_name.lstrip(".")
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.schemas and name not in self._pending:
            if name not in self.contract.messages and name not in self.contract.enums:
                raise ContractError(f"{name} is referenced but not in the descriptor set")
            self._pending.append(name)
        return _ref(name)

    def finish(self) -> dict[str, Schema]:
        while self._pending:
            name = self._pending.pop()
            if name in self.contract.enums:
                self.schemas[name] = self._enum_component(name)
            else:
                self.schemas[name] = self._message_component(name)
        return dict(sorted(self.schemas.items()))

    def _enum_component(self, name: str) -> Schema:
        node = self.contract.enums[name]
        enum = node.proto
        assert isinstance(enum, descriptor_pb2.EnumDescriptorProto)
        lines = [self.contract.comment(node.file, node.path), ""]
        for i, value in enumerate(enum.value):
            text = self.contract.comment(node.file, (*node.path, _ENUM_VALUE, i))
            lines.append(
                f"- `{value.name}`: {' '.join(text.split())}" if text else f"- `{value.name}`"
            )
        return {
            "type": "string",
            "enum": [value.name for value in enum.value],
            "description": "\n".join(lines).strip(),
        }

    def _message_component(self, name: str) -> Schema:
        node = self.contract.messages[name]
        message = node.proto
        assert isinstance(message, descriptor_pb2.DescriptorProto)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for i, field_proto in enumerate(message.field):
            property_schema, is_required = self.field_schema(field_proto)
            text = self.contract.comment(node.file, (*node.path, _MESSAGE_FIELD, i))
            if text:
                property_schema["description"] = text
            properties[_json_name(field_proto)] = property_schema
            if is_required:
                required.append(_json_name(field_proto))
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        description = self.contract.comment(node.file, node.path)
        if description:
            schema["description"] = description
        return schema

    # Fields -----------------------------------------------------------

    def _map_entry(self, field_proto: FieldProto) -> descriptor_pb2.DescriptorProto | None:
        if field_proto.type != _T.TYPE_MESSAGE or field_proto.label != _T.LABEL_REPEATED:
            return None
        entry = self.contract.messages.get(field_proto.type_name.lstrip("."))
        if entry is None:
            return None
        proto = entry.proto
        assert isinstance(proto, descriptor_pb2.DescriptorProto)
        return proto if proto.options.map_entry else None

    def value_schema(
        self, field_proto: FieldProto, rules: validate_pb2.FieldRules | None
    ) -> Schema:
        """One value of the field (an element, for a repeated field)."""
        if field_proto.type in (_T.TYPE_MESSAGE, _T.TYPE_ENUM, _T.TYPE_GROUP):
            schema = self.type_schema(field_proto.type_name)
            if field_proto.type == _T.TYPE_ENUM and rules is not None:
                schema = self._enum_rules(field_proto, schema, rules)
            return schema
        schema = dict(_SCALARS[field_proto.type])
        if rules is not None:
            schema.update(_scalar_rules(field_proto.type, rules))
        return schema

    def field_schema(self, field_proto: FieldProto) -> tuple[Schema, bool]:
        """The property's schema and whether protovalidate requires it."""
        rules = _field_rules(field_proto)
        required = bool(rules is not None and rules.required)
        if rules is not None and rules.ignore == validate_pb2.IGNORE_ALWAYS:
            rules = None
        entry = self._map_entry(field_proto)
        if entry is not None:
            key, value = entry.field[0], entry.field[1]
            map_rules = rules.map if rules is not None and rules.HasField("map") else None
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.value_schema(
                    value, map_rules.values if map_rules and map_rules.HasField("values") else None
                ),
            }
            if key.type == _T.TYPE_STRING and map_rules and map_rules.HasField("keys"):
                schema["propertyNames"] = self.value_schema(key, map_rules.keys)
            if map_rules and map_rules.HasField("min_pairs"):
                schema["minProperties"] = map_rules.min_pairs
            if map_rules and map_rules.HasField("max_pairs"):
                schema["maxProperties"] = map_rules.max_pairs
            return schema, required
        if field_proto.label == _T.LABEL_REPEATED:
            repeated = rules.repeated if rules is not None and rules.HasField("repeated") else None
            item_rules = repeated.items if repeated and repeated.HasField("items") else None
            schema = {"type": "array", "items": self.value_schema(field_proto, item_rules)}
            if repeated and repeated.HasField("min_items"):
                schema["minItems"] = repeated.min_items
            if repeated and repeated.HasField("max_items"):
                schema["maxItems"] = repeated.max_items
            if repeated and repeated.unique:
                schema["uniqueItems"] = True
            return schema, required
        schema = self.value_schema(field_proto, rules)
        if rules is not None and rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE:
            schema = _allow_zero(field_proto, schema)
        return schema, required

    def _enum_rules(
        self, field_proto: FieldProto, ref: Schema, rules: validate_pb2.FieldRules
    ) -> Schema:
        if not rules.HasField("enum"):
            return ref
        enum_rules = rules.enum
        node = self.contract.enums[field_proto.type_name.lstrip(".")]
        assert isinstance(node.proto, descriptor_pb2.EnumDescriptorProto)
        names = {value.number: value.name for value in node.proto.value}
        allowed: list[str] = []
        if enum_rules.HasField("const"):
            allowed = [names[enum_rules.const]] if enum_rules.const in names else []
        elif getattr(enum_rules, "in"):
            allowed = [names[n] for n in getattr(enum_rules, "in") if n in names]
        elif enum_rules.not_in:
            allowed = [name for number, name in names.items() if number not in enum_rules.not_in]
        return {"allOf": [ref], "enum": allowed} if allowed else ref


def _field_rules(field_proto: FieldProto) -> validate_pb2.FieldRules | None:
    options = field_proto.options
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def _scalar_rules(field_type: int, rules: validate_pb2.FieldRules) -> Schema:
    """The protovalidate rules of a scalar value that JSON Schema can state."""
    constraints: Schema = {}
    kind = _NUMERIC_RULES.get(field_type)
    if field_type == _T.TYPE_STRING and rules.HasField("string"):
        text = rules.string
        if text.HasField("len"):
            constraints["minLength"] = constraints["maxLength"] = text.len
        if text.HasField("min_len"):
            constraints["minLength"] = text.min_len
        if text.HasField("max_len"):
            constraints["maxLength"] = text.max_len
        if text.HasField("pattern"):
            constraints["pattern"] = text.pattern
        if text.HasField("const"):
            constraints["const"] = text.const
        allowed = list(getattr(text, "in"))
        if allowed:
            constraints["enum"] = allowed
        well_known = text.WhichOneof("well_known")
        if well_known in _STRING_FORMATS and getattr(text, well_known):
            constraints["format"] = _STRING_FORMATS[well_known]
    elif field_type == _T.TYPE_BOOL and rules.HasField("bool") and rules.bool.HasField("const"):
        constraints["const"] = rules.bool.const
    elif kind is not None and kind == str(rules.WhichOneof("type")):
        number = getattr(rules, kind)
        lower = number.WhichOneof("greater_than")
        upper = number.WhichOneof("less_than")
        low = getattr(number, lower) if lower else None
        high = getattr(number, upper) if upper else None
        # protovalidate reads lower > upper as "outside the range", which a
        # single minimum and maximum cannot say.
        if low is None or high is None or low <= high:
            if lower == "gte":
                constraints["minimum"] = low
            elif lower == "gt":
                constraints["exclusiveMinimum"] = low
            if upper == "lte":
                constraints["maximum"] = high
            elif upper == "lt":
                constraints["exclusiveMaximum"] = high
        if number.HasField("const"):
            constraints["const"] = number.const
        allowed_numbers = list(getattr(number, "in"))
        if allowed_numbers:
            constraints["enum"] = allowed_numbers
    return constraints


def _allow_zero(field_proto: FieldProto, schema: Schema) -> Schema:
    """IGNORE_IF_ZERO_VALUE: the rules hold for any value but the zero one,
    which is also what leaving the field out sends."""
    zeros: dict[int, Any] = {_T.TYPE_STRING: "", _T.TYPE_BOOL: False, _T.TYPE_BYTES: ""}
    zero = zeros.get(field_proto.type, 0)
    if "$ref" in schema or "allOf" in schema:
        return schema
    rule_format = schema.get("format") in _STRING_FORMATS.values()  # uuid, email, …
    refuses_zero = (
        schema.get("minLength", 0) > 0
        or rule_format
        or "pattern" in schema
        or "const" in schema
        or "enum" in schema
        or any(
            key in schema for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
        )
    )
    if not refuses_zero:
        return schema
    # A format that is a rule (uuid) goes with the rules; one that is the
    # type's encoding (int64) stays on the base.
    kept = ("type",) if rule_format else ("type", "format")
    base: Schema = {key: schema[key] for key in kept if key in schema}
    rules = {key: value for key, value in schema.items() if key not in kept}
    return {**base, "anyOf": [{"const": zero}, rules]}


# Operations -------------------------------------------------------------


@dataclass(frozen=True)
class _Binding:
    method: str  # lowercase HTTP method
    path: str  # OpenAPI path template
    variables: tuple[str, ...]  # field paths bound by the path, e.g. `post.id`
    body: str
    response_body: str


_VARIABLE = re.compile(r"\{([A-Za-z0-9_.]+)(=[^}]*)?\}")


def _path_name(field_path: str) -> str:
    """A path parameter's name: `post.id` as `postId`. The URL is the same;
    a dot in a template's name trips some OpenAPI tools (Schemathesis)."""
    first, *rest = field_path.split(".")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _bindings(rule: http_pb2.HttpRule) -> Iterator[_Binding]:
    for current in (rule, *rule.additional_bindings):
        kind = current.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            method, template = current.custom.kind.lower(), current.custom.path
        else:
            method, template = kind, getattr(current, kind)
        variables = tuple(match.group(1) for match in _VARIABLE.finditer(template))
        path = _VARIABLE.sub(lambda match: "{" + _path_name(match.group(1)) + "}", template)
        yield _Binding(method, path, variables, current.body, current.response_body)


def _resolve(contract: _Contract, message: str, field_path: str) -> list[FieldProto]:
    """The fields along a dotted proto field path, from `message` on."""
    fields: list[FieldProto] = []
    current: str | None = message
    for name in field_path.split("."):
        if current is None:
            raise ContractError(f"{field_path} goes through a field that is not a message")
        match = next((f for f in contract.message(current).field if f.name == name), None)
        if match is None:
            raise ContractError(f"{current} has no field {name!r} (path {field_path})")
        fields.append(match)
        current = match.type_name.lstrip(".") if match.type == _T.TYPE_MESSAGE else None
    return fields


def _field_comment(contract: _Contract, message: str, field_proto: FieldProto) -> str:
    node = contract.messages[message]
    index = list(contract.message(message).field).index(field_proto)
    return contract.comment(node.file, (*node.path, _MESSAGE_FIELD, index))


class _Operations:
    def __init__(self, contract: _Contract, builder: _Builder) -> None:
        self.contract = contract
        self.builder = builder

    def parameter(self, message: str, field_path: str, location: str) -> Schema:
        fields = _resolve(self.contract, message, field_path)
        owner = message
        for step in fields[:-1]:
            owner = step.type_name.lstrip(".")
        leaf = fields[-1]
        schema, required = self.builder.field_schema(leaf)
        if location == "query":
            name = ".".join(_json_name(step) for step in fields)
        else:
            name = _path_name(field_path)
        parameter: Schema = {"name": name, "in": location, "schema": schema}
        description = _field_comment(self.contract, owner, leaf)
        if description:
            parameter["description"] = description
        # A required field inside an absent message is not required.
        if location == "path" or (required and len(fields) == 1):
            parameter["required"] = True
        elif leaf.label == _T.LABEL_REPEATED:
            parameter["style"], parameter["explode"] = "form", True
        return parameter

    def _queryable(self, field_proto: FieldProto) -> bool:
        """Whether a field can be one query parameter: a scalar, an enum, a
        list of those, or a well-known type with a string form."""
        if field_proto.type == _T.TYPE_MESSAGE:
            return (
                field_proto.label != _T.LABEL_REPEATED
                and field_proto.type_name.lstrip(".") in _QUERY_WELL_KNOWN
            )
        return field_proto.type != _T.TYPE_GROUP

    def query_paths(self, message: str, exclude: set[str]) -> list[str]:
        """Field paths sent as query parameters: every field not in the path
        or body, and the fields of a message field one level down when they
        are all simple."""
        paths: list[str] = []
        for field_proto in self.contract.message(message).field:
            if field_proto.name in exclude:
                continue
            if self._queryable(field_proto):
                paths.append(field_proto.name)
            elif field_proto.type == _T.TYPE_MESSAGE and field_proto.label != _T.LABEL_REPEATED:
                nested = self.contract.message(field_proto.type_name.lstrip("."))
                if nested.field and all(self._queryable(sub) for sub in nested.field):
                    paths.extend(
                        f"{field_proto.name}.{sub.name}"
                        for sub in nested.field
                        if f"{field_proto.name}.{sub.name}" not in exclude
                    )
        return paths

    def request_body(self, message: str, binding: _Binding) -> Schema | None:
        if not binding.body:
            return None
        if binding.body == "*":
            top_level = {variable for variable in binding.variables if "." not in variable}
            if not top_level:
                schema = self.builder.type_schema(message)
            else:
                # The request message less the fields the path already carries.
                full = self.builder._message_component(message)
                properties = {
                    _json_name(f): full["properties"][_json_name(f)]
                    for f in self.contract.message(message).field
                    if f.name not in top_level
                }
                schema = {"type": "object", "properties": properties}
                kept = [name for name in full.get("required", []) if name in properties]
                if kept:
                    schema["required"] = kept
        else:
            (body_field,) = _resolve(self.contract, message, binding.body)[-1:]
            schema, _ = self.builder.field_schema(body_field)
        # A body with no fields left may be sent empty.
        required = not (schema.get("type") == "object" and not schema.get("properties"))
        return {"required": required, "content": {"application/json": {"schema": schema}}}

    def operation(
        self,
        service: str,
        method: descriptor_pb2.MethodDescriptorProto,
        binding: _Binding,
        operation_id: str,
        description: str,
    ) -> Schema:
        request = method.input_type.lstrip(".")
        response = method.output_type.lstrip(".")
        parameters = [self.parameter(request, v, "path") for v in binding.variables]
        if binding.body != "*":
            exclude = set(binding.variables)
            if binding.body:
                exclude.add(binding.body)
            parameters += [
                self.parameter(request, p, "query") for p in self.query_paths(request, exclude)
            ]
        if binding.response_body:
            response_field = _resolve(self.contract, response, binding.response_body)[-1]
            response_schema, _ = self.builder.field_schema(response_field)
        else:
            response_schema = self.builder.type_schema(response)
        if method.server_streaming:
            # The transcoder streams a JSON array of the messages.
            response_schema = {"type": "array", "items": response_schema}
        full_method = f"{service}/{method.name}"
        operation: Schema = {
            "operationId": operation_id,
            "summary": _summary(description) or method.name,
            "tags": [service.rsplit(".", 1)[-1]],
        }
        if description:
            operation["description"] = description
        if parameters:
            operation["parameters"] = parameters
        body = self.request_body(request, binding)
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = {
            "200": {
                "description": f"The {response.rsplit('.', 1)[-1]}.",
                "content": {"application/json": {"schema": response_schema}},
            },
            "4XX": {"$ref": f"#/components/responses/{ERROR_RESPONSE}"},
            "5XX": {"$ref": f"#/components/responses/{ERROR_RESPONSE}"},
        }
        operation["security"] = [] if full_method in PUBLIC_METHODS else [{SECURITY_SCHEME: []}]
        return operation


def _status_schema(builder: _Builder, contract: _Contract) -> Schema:
    """google.rpc.Status as the transcoder writes it: details are Any, so
    each carries its `@type` beside the detail message's own fields."""
    detail_types = sorted(
        name
        for name, node in contract.messages.items()
        if node.file == ERROR_DETAILS_FILE and len(node.path) == 2
    )
    details: Schema = {
        "type": "object",
        "properties": {
            "@type": {
                "type": "string",
                "description": (
                    "The detail's type, e.g. `type.googleapis.com/google.rpc.BadRequest`."
                ),
            }
        },
        "required": ["@type"],
        "additionalProperties": True,
    }
    if detail_types:
        details["anyOf"] = [builder.type_schema(name) for name in detail_types]
    return {
        "type": "object",
        "description": "An error: google.rpc.Status in the proto3 JSON mapping.",
        "properties": {
            "code": {
                "type": "integer",
                "format": "int32",
                "description": "The gRPC code (google.rpc.Code), e.g. 3 for INVALID_ARGUMENT.",
            },
            "message": {"type": "string", "description": "What went wrong, for a developer."},
            "details": {
                "type": "array",
                "items": details,
                "description": (
                    "Typed details: BadRequest field violations, ErrorInfo reasons, "
                    "RetryInfo delays."
                ),
            },
        },
    }


def document(descriptor_set: bytes) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every nuell.* service with HTTP rules."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    contract = _index(files)
    builder = _Builder(contract)
    operations = _Operations(contract, builder)
    paths: dict[str, dict[str, Schema]] = {}
    tags: list[Schema] = []
    for file in files:
        if not file.package.startswith("nuell."):
            continue
        for service_index, service in enumerate(file.service):
            full_service = f"{file.package}.{service.name}"
            routed = [
                (method_index, method)
                for method_index, method in enumerate(service.method)
                if method.options.HasExtension(annotations_pb2.http)
            ]
            if not routed:
                continue
            tag: Schema = {"name": service.name}
            service_comment = contract.comment(file.name, (_FILE_SERVICE, service_index))
            if service_comment:
                tag["description"] = service_comment
            tags.append(tag)
            for method_index, method in routed:
                description = contract.comment(
                    file.name, (_FILE_SERVICE, service_index, _SERVICE_METHOD, method_index)
                )
                rule = method.options.Extensions[annotations_pb2.http]
                for n, binding in enumerate(_bindings(rule)):
                    operation_id = f"{service.name}_{method.name}" + (f"_{n}" if n else "")
                    item = paths.setdefault(binding.path, {})
                    if binding.method in item:
                        raise ContractError(
                            f"{binding.method.upper()} {binding.path} is bound twice"
                        )
                    item[binding.method] = operations.operation(
                        full_service, method, binding, operation_id, description
                    )
    status = _status_schema(builder, contract)
    schemas = builder.finish()
    schemas[STATUS_SCHEMA] = status
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Nuell API", "version": "v1", "description": _INTRO},
        "tags": sorted(tags, key=lambda tag: tag["name"]),
        "paths": {path: _ordered(item) for path, item in sorted(paths.items())},
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {
                ERROR_RESPONSE: {
                    "description": "An error (google.rpc.Status); its code sets the HTTP status.",
                    "content": {"application/json": {"schema": _ref(STATUS_SCHEMA)}},
                }
            },
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "`Authorization: Bearer <access token>`, the `accessToken` of "
                        "Login, VerifyMfa or Refresh."
                    ),
                }
            },
        },
    }


_METHOD_ORDER = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _ordered(item: dict[str, Schema]) -> dict[str, Schema]:
    return {method: item[method] for method in _METHOD_ORDER if method in item}


def dumps(doc: dict[str, Any]) -> bytes:
    """The document as UTF-8 JSON (Japanese stays readable), newline-terminated."""
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("contract", type=Path, help="the descriptor set, comments included")
    parser.add_argument("--out", type=Path, help="write here instead of to stdout")
    args = parser.parse_args(argv)
    try:
        descriptor_set = args.contract.read_bytes()
    except FileNotFoundError:
        print(f"openapi: {args.contract} is missing: run `make gen`", file=sys.stderr)
        return 1
    try:
        text = dumps(document(descriptor_set))
    except ContractError as exc:
        print(f"openapi: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.buffer.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
