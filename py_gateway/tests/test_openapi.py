"""The OpenAPI document made from the real contract (build/contract.binpb,
`make gen`), and from copies of it edited for a case."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from buf.validate import validate_pb2
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from nuell_gateway import openapi
from nuell_gateway.authz import POLICIES

CONTRACT = Path(__file__).resolve().parents[2] / "build" / "contract.binpb"
FieldProto = descriptor_pb2.FieldDescriptorProto


@pytest.fixture(scope="module")
def contract() -> bytes:
    if not CONTRACT.is_file():
        pytest.fail(f"{CONTRACT} is missing: run `make gen`", pytrace=False)
    return CONTRACT.read_bytes()


@pytest.fixture(scope="module")
def doc(contract: bytes) -> dict[str, Any]:
    return openapi.document(contract)


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref followed (one level, as the document uses them)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    target: dict[str, Any] = doc["components"]["schemas"][ref.removeprefix(prefix)]
    return target


def body_schema(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return resolve(doc, body)


def parameters(doc: dict[str, Any], path: str, method: str) -> dict[tuple[str, str], Any]:
    return {(p["in"], p["name"]): p for p in doc["paths"][path][method].get("parameters", [])}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


# The document ----------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_reference_resolves_and_every_component_is_reached(doc: dict[str, Any]) -> None:
    refs: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    schemas = {f"#/components/schemas/{name}" for name in doc["components"]["schemas"]}
    responses = {f"#/components/responses/{name}" for name in doc["components"]["responses"]}
    assert refs <= schemas | responses
    assert schemas <= refs, "components nothing refers to"


def test_login_takes_its_body_with_the_declared_length_limits(doc: dict[str, Any]) -> None:
    login = body_schema(doc, "/v1/auth:login", "post")
    assert login["properties"]["password"]["minLength"] == 1
    assert login["properties"]["password"]["maxLength"] == 128
    assert login["properties"]["email"]["maxLength"] == 254
    register = body_schema(doc, "/v1/auth:register", "post")
    assert register["properties"]["password"]["minLength"] == 12
    assert register["properties"]["email"]["format"] == "email"
    assert register["properties"]["locale"]["enum"] == ["", "ja", "en"]
    # body "*": the whole request in the body, nothing in the query.
    assert "parameters" not in doc["paths"]["/v1/auth:login"]["post"]


def test_get_post_takes_a_uuid_path_parameter(doc: dict[str, Any]) -> None:
    (name, parameter), *others = parameters(doc, "/v1/posts/{id}", "get").items()
    assert not others
    assert name == ("path", "id")
    assert parameter["required"] is True
    assert parameter["schema"] == {"type": "string", "format": "uuid"}
    ok = doc["paths"]["/v1/posts/{id}"]["get"]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/nuell.posts.v1.GetPostResponse"}


def test_update_post_binds_the_post_id_the_body_and_the_update_mask(
    doc: dict[str, Any],
) -> None:
    found = parameters(doc, "/v1/posts/{postId}", "patch")
    assert set(found) == {("path", "postId"), ("query", "updateMask")}
    assert found[("path", "postId")]["schema"]["format"] == "uuid"
    assert found[("query", "updateMask")]["schema"]["type"] == "string"
    post = body_schema(doc, "/v1/posts/{postId}", "patch")
    assert post is doc["components"]["schemas"]["nuell.posts.v1.Post"]
    assert post["properties"]["content"]["maxLength"] == 5000
    # The request itself is never a component: only its `post` travels as the body.
    assert "nuell.posts.v1.UpdatePostRequest" not in doc["components"]["schemas"]


def test_reads_take_every_request_field_as_a_camel_case_query_parameter(
    doc: dict[str, Any],
) -> None:
    listed = parameters(doc, "/v1/posts", "get")
    assert set(listed) == {("query", "pageSize"), ("query", "pageToken"), ("query", "authorId")}
    assert listed[("query", "pageSize")]["schema"] == {
        "type": "integer",
        "format": "int32",
        "minimum": 0,
    }
    assert listed[("query", "pageToken")]["schema"]["maxLength"] == 512
    search = parameters(doc, "/v1/posts:search", "get")
    order = resolve(doc, search[("query", "orderBy")]["schema"])
    assert order["enum"] == [
        "SEARCH_ORDER_UNSPECIFIED",
        "SEARCH_ORDER_RELEVANCE",
        "SEARCH_ORDER_NEWEST",
    ]
    assert search[("query", "query")]["schema"]["minLength"] == 1
    assert parameters(doc, "/v1/users/me", "get") == {}


def test_a_body_star_with_a_path_field_leaves_that_field_out_of_the_body(
    doc: dict[str, Any],
) -> None:
    revoke = doc["paths"]["/v1/sessions/{id}:revoke"]["post"]
    assert set(parameters(doc, "/v1/sessions/{id}:revoke", "post")) == {("path", "id")}
    body = revoke["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"type": "object", "properties": {}}
    assert body["required"] is False  # nothing left to send


def test_public_operations_need_no_token_and_all_others_a_bearer_token(
    doc: dict[str, Any],
) -> None:
    scheme = doc["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    seen_public = set()
    for _, _, operation in operations(doc):
        service, method = operation["operationId"].split("_")
        full = next(name for name in POLICIES if name.endswith(f".{service}/{method}"))
        if POLICIES[full].public:
            seen_public.add(method)
            assert operation["security"] == [], operation["operationId"]
        else:
            assert operation["security"] == [{openapi.SECURITY_SCHEME: []}], full
    assert {"Register", "Login", "Refresh", "VerifyMfa", "ResetPassword"} <= seen_public
    assert "ChangePassword" not in seen_public


def test_every_operation_has_a_unique_id_a_tag_a_200_and_the_error_responses(
    doc: dict[str, Any],
) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))
    assert {"AuthService_Login", "PostService_GetPost", "UserService_GetCurrentUser"} <= set(ids)
    tags = {tag["name"] for tag in doc["tags"]}
    assert tags == {"AuthService", "PostService", "SessionService", "UserService"}
    for _, _, operation in operations(doc):
        assert operation["tags"][0] in tags
        assert operation["summary"]
        assert "application/json" in operation["responses"]["200"]["content"]
        for status in ("4XX", "5XX"):
            assert operation["responses"][status] == {"$ref": "#/components/responses/Error"}
    # Unrouted RPCs (the stream, the compute service) are not described.
    assert "PostService_WatchPosts" not in ids
    assert not any(op_id.startswith("ComputeService_") for op_id in ids)


def test_comments_become_descriptions(doc: dict[str, Any]) -> None:
    login = doc["paths"]["/v1/auth:login"]["post"]
    assert login["summary"] == (
        "Login exchanges an email and password for tokens, starting a session "
        "(see nuell.sessions.v1.SessionService)."
    )
    assert "TOO_MANY_ATTEMPTS" in login["description"]
    tag = next(tag for tag in doc["tags"] if tag["name"] == "PostService")
    assert tag["description"].startswith("PostService publishes, reads, edits and deletes posts.")
    role = doc["components"]["schemas"]["nuell.users.v1.Role"]
    assert "- `ROLE_ADMIN`: An administrator" in role["description"]
    # A lint directive is not documentation.
    assert "buf:lint" not in openapi.dumps(doc).decode()


def test_japanese_in_comments_is_carried_as_utf8(doc: dict[str, Any]) -> None:
    display_name = doc["components"]["schemas"]["nuell.users.v1.User"]["properties"]["displayName"]
    assert '"が"' in display_name["description"]
    assert display_name["maxLength"] == 64
    text = openapi.dumps(doc)
    assert '"が\\"'.encode() in text  # written as UTF-8, not \u escapes
    assert json.loads(text) == doc


def test_types_follow_the_proto3_json_mapping(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    post = schemas["nuell.posts.v1.Post"]["properties"]
    assert post["createTime"]["type"] == "string"
    assert post["createTime"]["format"] == "date-time"
    assert post["analysis"]["$ref"] == "#/components/schemas/nuell.posts.v1.PostAnalysis"
    analysis = schemas["nuell.posts.v1.PostAnalysis"]["properties"]
    assert analysis["simhash"]["type"] == "string"  # fixed64: a string in JSON
    assert analysis["wordCount"]["type"] == "integer"
    posts = schemas["nuell.posts.v1.ListPostsResponse"]["properties"]["posts"]
    assert posts == {
        **posts,
        "type": "array",
        "items": {"$ref": "#/components/schemas/nuell.posts.v1.Post"},
    }
    assert schemas["nuell.users.v1.User"]["properties"]["isActive"]["type"] == "boolean"
    search_result = schemas["nuell.posts.v1.SearchResult"]["properties"]["score"]
    assert search_result["format"] == "double"
    status = schemas["Status"]
    detail_types = {ref["$ref"] for ref in status["properties"]["details"]["items"]["anyOf"]}
    assert "#/components/schemas/google.rpc.BadRequest" in detail_types
    retry = schemas["google.rpc.RetryInfo"]["properties"]["retryDelay"]
    assert retry["type"] == "string"  # a Duration: "1.5s"


def test_the_document_is_deterministic(contract: bytes) -> None:
    first, second = openapi.document(contract), openapi.document(contract)
    assert first == second
    assert openapi.dumps(first) == openapi.dumps(second)
    assert list(first["paths"]) == sorted(first["paths"])
    assert list(first["components"]["schemas"]) == sorted(first["components"]["schemas"])


# Rules and bad contracts, on contracts made for the case ----------------


def file_named(files: descriptor_pb2.FileDescriptorSet, name: str) -> Any:
    return next(file for file in files.file if file.name == name)


def with_rule(contract: bytes, edit: Any) -> bytes:
    """The real contract with `edit(files)` applied."""
    files = descriptor_pb2.FileDescriptorSet.FromString(contract)
    edit(files)
    return files.SerializeToString()


def test_a_path_naming_no_field_is_refused(contract: bytes) -> None:
    def break_get_post(files: descriptor_pb2.FileDescriptorSet) -> None:
        service = file_named(files, "nuell/posts/v1/post_service.proto").service[0]
        get_post = next(method for method in service.method if method.name == "GetPost")
        get_post.options.Extensions[annotations_pb2.http].get = "/v1/posts/{post_id}"

    with pytest.raises(openapi.ContractError, match="GetPostRequest has no field 'post_id'"):
        openapi.document(with_rule(contract, break_get_post))


def test_two_rpcs_on_one_path_and_method_are_refused(contract: bytes) -> None:
    def clash(files: descriptor_pb2.FileDescriptorSet) -> None:
        service = file_named(files, "nuell/posts/v1/post_service.proto").service[0]
        delete = next(method for method in service.method if method.name == "DeletePost")
        delete.options.Extensions[annotations_pb2.http].ClearField("delete")
        delete.options.Extensions[annotations_pb2.http].get = "/v1/posts/{id}"

    with pytest.raises(openapi.ContractError, match=r"GET /v1/posts/\{id\} is bound twice"):
        openapi.document(with_rule(contract, clash))


def add_test_file(files: descriptor_pb2.FileDescriptorSet, fields: list[FieldProto]) -> None:
    """A nuell.test.v1 service with one GET route over a request of `fields`."""
    file = files.file.add(name="nuell/test/v1/test.proto", package="nuell.test.v1")
    file.dependency.extend(["buf/validate/validate.proto", "google/api/annotations.proto"])
    file.message_type.add(name="Probe").field.extend(fields)
    file.message_type.add(name="Empty")
    method = file.service.add(name="ProbeService").method.add(
        name="Probe", input_type=".nuell.test.v1.Probe", output_type=".nuell.test.v1.Empty"
    )
    method.options.Extensions[annotations_pb2.http].get = "/v1/probe"


def probe_field(
    name: str, number: int, kind: FieldProto.Type.ValueType, rules: validate_pb2.FieldRules
) -> FieldProto:
    field = FieldProto(name=name, number=number, type=kind, label=FieldProto.LABEL_OPTIONAL)
    field.options.Extensions[validate_pb2.field].CopyFrom(rules)
    return field


def test_validation_rules_become_schema_constraints(contract: bytes) -> None:
    code = validate_pb2.FieldRules(
        ignore=validate_pb2.IGNORE_IF_ZERO_VALUE,
        string=validate_pb2.StringRules(min_len=6, pattern="^[0-9]+$"),
    )
    ratio = validate_pb2.FieldRules(int32=validate_pb2.Int32Rules(gt=0, lt=10))
    outside = validate_pb2.FieldRules(int32=validate_pb2.Int32Rules(gt=10, lt=0))
    tags = probe_field(
        "tags",
        4,
        FieldProto.TYPE_STRING,
        validate_pb2.FieldRules(
            repeated=validate_pb2.RepeatedRules(
                min_items=1,
                max_items=3,
                items=validate_pb2.FieldRules(string=validate_pb2.StringRules(max_len=8)),
            )
        ),
    )
    tags.label = FieldProto.LABEL_REPEATED
    fields = [
        probe_field("code", 1, FieldProto.TYPE_STRING, code),
        probe_field("ratio", 2, FieldProto.TYPE_INT32, ratio),
        probe_field("outside", 3, FieldProto.TYPE_INT32, outside),
        tags,
        probe_field("count", 5, FieldProto.TYPE_INT64, validate_pb2.FieldRules(required=True)),
    ]
    doc = openapi.document(with_rule(contract, lambda files: add_test_file(files, fields)))
    validate(doc)
    found = {name: p["schema"] for (_, name), p in parameters(doc, "/v1/probe", "get").items()}
    # Empty is "not set", which the rules let through.
    assert found["code"] == {
        "type": "string",
        "anyOf": [{"const": ""}, {"minLength": 6, "pattern": "^[0-9]+$"}],
    }
    assert found["ratio"] == {
        "type": "integer",
        "format": "int32",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 10,
    }
    # gt > lt means "outside (lt, gt)", which minimum and maximum cannot say.
    assert found["outside"] == {"type": "integer", "format": "int32"}
    assert found["tags"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 8},
        "minItems": 1,
        "maxItems": 3,
    }
    assert found["count"] == {"type": "string", "format": "int64"}
    required = {
        name for (_, name), p in parameters(doc, "/v1/probe", "get").items() if p.get("required")
    }
    assert required == {"count"}
    assert "nuell.test.v1.Probe" not in doc["components"]["schemas"]
    assert doc["paths"]["/v1/probe"]["get"]["security"] == [{openapi.SECURITY_SCHEME: []}]


def test_the_cli_writes_the_document_and_explains_a_missing_contract(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "api" / "openapi.json"
    command = (sys.executable, "-m", "nuell_gateway.openapi")
    written = subprocess.run((*command, CONTRACT, "--out", out), capture_output=True, timeout=60)
    assert written.returncode == 0, written.stderr.decode()
    assert out.read_bytes() == openapi.dumps(doc)
    printed = subprocess.run((*command, CONTRACT), capture_output=True, timeout=60)
    assert printed.stdout == out.read_bytes()

    missing = tmp_path / "nothing.binpb"
    failed = subprocess.run((*command, missing), capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert failed.stderr == f"openapi: {missing} is missing: run `make gen`\n"
    assert failed.stdout == ""
