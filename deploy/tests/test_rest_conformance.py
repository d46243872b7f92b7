"""The REST API against its own OpenAPI document, by a client nobody here
wrote: Schemathesis reads /openapi.json from the running edge and sends
generated requests (valid ones, and ones that break the document's rules)
to every operation, signed in, through Envoy to the real gateway and
PostgreSQL. No reply may be a server error, and every reply must be what the
document says: its status, content type and schema."""

from __future__ import annotations

import json
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from deploy.tests.support import Backend, Edge, http_request, mark_verified

PASSWORD = "Conformance-Pass-7!"
# "Every request the document allows succeeds" cannot hold: page tokens and
# etags are opaque values only the server issues, a password must pass the
# strength rules and a post must not repeat the last one, none of which a
# schema can say. Every other check stays.
NOT_EXPRESSIBLE = [schemathesis.checks.positive_data_acceptance]
# Examples per operation and generation mode: enough to cross every field's
# rules, few enough to keep the run under a minute for ~30 operations.
EXAMPLES = 12


@pytest.fixture(scope="module")
def rest_document(edge: Edge) -> dict[str, object]:
    reply = http_request(edge.http_port, "GET", "/openapi.json", {})
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    document: dict[str, object] = json.loads(reply.body)
    validate(document)  # a valid OpenAPI 3.1 document, or this raises
    return document


@pytest.fixture(scope="module")
def rest_schema(rest_document: dict[str, object], edge: Edge) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(rest_document)
    schema.config.update(base_url=f"http://127.0.0.1:{edge.http_port}")
    return schema


@pytest.fixture(scope="module")
def signed_in(edge: Edge, backend: Backend) -> dict[str, str]:
    """The bearer header of a verified account of this module's own."""
    email = f"conformance-{uuid.uuid4().hex[:10]}@example.jp"
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    json_type = {"content-type": "application/json"}
    registered = http_request(edge.http_port, "POST", "/v1/auth:register", json_type, body)
    assert registered.status == 200, registered
    mark_verified(backend.database_url, email)
    login = http_request(edge.http_port, "POST", "/v1/auth:login", json_type, body)
    assert login.status == 200, login
    # Capitalised as the document's security scheme names it, so Schemathesis can
    # also send each case without it (and expect a refusal).
    return {"Authorization": f"Bearer {json.loads(login.body)['accessToken']}"}


def test_the_edge_serves_a_valid_document_of_every_rest_path(
    rest_document: dict[str, object],
) -> None:
    paths = rest_document["paths"]
    assert isinstance(paths, dict)
    assert {"/v1/auth:login", "/v1/posts", "/v1/posts/{id}", "/v1/users/me"} <= set(paths)
    assert rest_document["servers"] == [{"url": "/"}]


def test_every_operation_conforms_to_the_document(
    rest_schema: schemathesis.BaseSchema, signed_in: dict[str, str]
) -> None:
    # Schemathesis' own pytest integration does not run under pytest 9 yet;
    # its Python API drives the same generation and checks.
    failures: list[str] = []
    calls: list[str] = []
    operations = [result.ok() for result in rest_schema.get_all_operations()]
    assert len(operations) >= 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,  # the same requests every run: a failure can be replayed
                database=None,
            )
            def conforms(case: schemathesis.Case) -> None:
                calls.append(case.operation.label)
                case.call_and_validate(headers=signed_in, excluded_checks=NOT_EXPRESSIBLE)

            try:
                conforms()
            except Exception as exc:  # every operation's failure, not only the first
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 10 * len(operations), len(calls)
