"""The real stack, piece by piece: rust_compute, py_gateway and Envoy in
front, probed with real grpcurl, grpcio and plain HTTP/1.1 (gRPC-Web)."""

from __future__ import annotations

import dataclasses
import http.client
import json
import struct
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from render import write_envoy
from settings import EDGE_GRPC_SERVICES, Address, StackSettings
from support import (
    ENVOY,
    ProcessGroup,
    base_env,
    envoy_ready,
    free_port,
    grpcurl,
    health_status,
    wait_for,
    write_health_protoset,
)

NUELL_SERVICES = [s for s in EDGE_GRPC_SERVICES if s.startswith("nuell.")]
REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
ALLOWED_ORIGIN = "https://nue-japan.com"
DISALLOWED_ORIGIN = "https://evil.example"


@dataclass(frozen=True)
class Stack:
    compute: str  # ip:port
    gateway: str
    edge: str
    edge_port: int
    protoset: Path  # grpc.health.v1 for grpcurl at the edge, which has no reflection


@pytest.fixture(scope="module")
def stack(
    compute_bin: Path,
    migrated_database_url: str,
    module_processes: ProcessGroup,
    tmp_path_factory: pytest.TempPathFactory,
) -> Stack:
    compute = module_processes.start(
        "rust_compute", [compute_bin, "--addr", "127.0.0.1:0"], base_env()
    )
    compute_at = compute.listening_on()
    wait_for(lambda: health_status(compute_at) == "SERVING", timeout=30, what="rust_compute health")

    gateway = module_processes.start(
        "py_gateway",
        [sys.executable, "-m", "nuell_gateway", "serve"],
        base_env(
            DATABASE_URL=migrated_database_url,
            NUELL_GATEWAY_ADDR="127.0.0.1:0",
            NUELL_COMPUTE_TARGET=compute_at,
        ),
    )
    gateway_at = gateway.listening_on()
    wait_for(lambda: health_status(gateway_at) == "SERVING", timeout=30, what="py_gateway health")

    settings = dataclasses.replace(
        StackSettings.from_env(
            {"NUELL_CORS_ALLOWED_ORIGINS": f"http://localhost:3000,{ALLOWED_ORIGIN}"}
        ),
        edge_http=Address("0.0.0.0", free_port()),
        edge_admin=Address("127.0.0.1", free_port()),
        gateway=Address.parse(gateway_at, variable="gateway", allow_port_zero=False),
    )
    scratch = tmp_path_factory.mktemp("edge")
    config = write_envoy(settings, scratch / "envoy.yaml")
    envoy = module_processes.start(
        "envoy", [ENVOY, "-c", config, "--disable-hot-restart", "--log-level", "warning"]
    )
    wait_for(
        lambda: envoy_ready(settings.edge_admin.port) or envoy.popen.poll() is not None,
        timeout=60,
        what="Envoy /ready",
    )
    assert envoy.popen.poll() is None, envoy.tail()
    edge_at = settings.edge_http.connect_target
    return Stack(
        compute=compute_at,
        gateway=gateway_at,
        edge=edge_at,
        edge_port=settings.edge_http.port,
        protoset=write_health_protoset(scratch / "health.protoset"),
    )


def listed(target: str) -> set[str]:
    result = grpcurl("-plaintext", target, "list")
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


# --- grpcurl against each listener ---------------------------------------------


def test_gateway_lists_its_services_by_reflection(stack: Stack) -> None:
    services = listed(stack.gateway)

    assert {*NUELL_SERVICES, "grpc.health.v1.Health", *REFLECTION} <= services


def test_compute_lists_its_services_by_reflection(stack: Stack) -> None:
    services = listed(stack.compute)

    assert {"nuell.compute.v1.ComputeService", "grpc.health.v1.Health", *REFLECTION} <= services
    assert not {"nuell.auth.v1.AuthService", "nuell.posts.v1.PostService"} & services


@pytest.mark.parametrize("where", ["compute", "gateway", "edge"])
def test_health_is_serving(stack: Stack, where: str) -> None:
    target = getattr(stack, where)
    # The edge has no reflection, so grpcurl takes the schema from a protoset there.
    schema = ["-protoset", str(stack.protoset)] if where == "edge" else []

    result = grpcurl("-plaintext", *schema, target, "grpc.health.v1.Health/Check")

    assert result.returncode == 0, result.stderr
    assert '"status": "SERVING"' in result.stdout


@pytest.mark.parametrize("service", NUELL_SERVICES)
def test_gateway_reports_each_service_serving(stack: Stack, service: str) -> None:
    assert health_status(stack.gateway, service) == "SERVING"
    assert health_status(stack.edge, service) == "SERVING"


def test_edge_has_no_reflection(stack: Stack) -> None:
    result = grpcurl("-plaintext", stack.edge, "list")

    assert result.returncode != 0
    assert "does not support the reflection API" in result.stderr


@pytest.mark.parametrize("service", REFLECTION)
def test_edge_answers_reflection_unimplemented(stack: Stack, service: str) -> None:
    with grpc.insecure_channel(stack.edge) as channel:
        info = channel.stream_stream(f"/{service}/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as caught:
            list(info(iter([b""]), timeout=10))

    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


@pytest.fixture(scope="module")
def nuell_protoset(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """grpcurl flags carrying the Nuell schema, taken from the gateway's reflection."""
    flags = []
    for service in NUELL_SERVICES:
        protoset = tmp_path_factory.mktemp("protoset") / f"{service}.protoset"
        described = grpcurl(
            "-plaintext", "-protoset-out", protoset, stack.gateway, "describe", service
        )
        assert described.returncode == 0, described.stderr
        flags += ["-protoset", str(protoset)]
    return flags


def call_edge(stack: Stack, protoset: list[str], method: str, body: str, *flags: str) -> Any:
    result = grpcurl("-plaintext", *protoset, *flags, "-d", body, stack.edge, method)
    assert result.returncode == 0, f"{method}: {result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def signed_in(stack: Stack, nuell_protoset: list[str]) -> tuple[str, str]:
    """(email, access token) of an account registered and logged in through the edge."""
    email = f"edge-{uuid.uuid4().hex[:12]}@example.com"
    credentials = json.dumps({"email": email, "password": "Edge-route-check-7!"})
    call_edge(stack, nuell_protoset, "nuell.auth.v1.AuthService/Register", credentials)
    login = call_edge(stack, nuell_protoset, "nuell.auth.v1.AuthService/Login", credentials)
    # grpcurl prints the proto field names, not the lowerCamelCase JSON names.
    return email, login["access_token"]


def test_edge_passes_error_details_through(stack: Stack, nuell_protoset: list[str]) -> None:
    result = grpcurl(
        "-plaintext", *nuell_protoset, "-d", "{}",
        stack.edge, "nuell.users.v1.UserService/GetCurrentUser",
    )  # fmt: skip

    assert result.returncode != 0
    assert "Code: Unauthenticated" in result.stderr
    # google.rpc.ErrorInfo from grpc-status-details-bin, which the edge must not drop.
    assert "google.rpc.ErrorInfo" in result.stderr


def test_edge_passes_credentials_through(
    stack: Stack, nuell_protoset: list[str], signed_in: tuple[str, str]
) -> None:
    email, token = signed_in

    me = call_edge(
        stack, nuell_protoset, "nuell.users.v1.UserService/GetCurrentUser", "{}",
        "-H", f"authorization: Bearer {token}",
    )  # fmt: skip

    assert me["user"]["email"] == email


def test_edge_routes_compute_to_the_gateway(
    stack: Stack, nuell_protoset: list[str], signed_in: tuple[str, str]
) -> None:
    _, token = signed_in
    result = grpcurl(
        "-plaintext", *nuell_protoset, "-H", f"authorization: Bearer {token}",
        "-d", '{"text": "Hello edge. Hello gateway."}',
        stack.edge, "nuell.compute.v1.ComputeService/Analyze",
    )  # fmt: skip

    # The gateway itself answers (its message names the RPC): the call was
    # routed, authenticated and authorized. Forwarding to rust_compute is
    # not served yet, and says so rather than pretending.
    assert result.returncode != 0
    assert "Code: Unimplemented" in result.stderr
    assert "nuell.compute.v1.ComputeService/Analyze is not implemented yet" in result.stderr


# --- gRPC-Web and CORS over HTTP/1.1 --------------------------------------------


def http1(
    stack: Stack, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.edge_port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each gRPC-Web frame; flag 0x80 marks the trailers."""
    frames, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        frames.append((flags, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    assert offset == len(body), "truncated gRPC-Web frame"
    return frames


def grpc_web_health_check(
    stack: Stack, origin: str | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    message = health_pb2.HealthCheckRequest(service="").SerializeToString()
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-javascript/0.1",
    }
    if origin:
        headers["origin"] = origin
    return http1(
        stack,
        "POST",
        "/grpc.health.v1.Health/Check",
        headers,
        struct.pack(">BI", 0, len(message)) + message,
    )


def test_grpc_web_health_check(stack: Stack) -> None:
    response, body = grpc_web_health_check(stack)

    assert response.status == 200
    assert response.getheader("content-type", "").startswith("application/grpc-web")
    (data_flags, data), (trailer_flags, trailers) = grpc_web_frames(body)
    assert data_flags == 0
    assert (
        health_pb2.HealthCheckResponse.FromString(data).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert trailer_flags == 0x80
    assert b"grpc-status:0" in trailers.replace(b" ", b"")


def test_grpc_web_response_carries_cors_for_allowed_origin(stack: Stack) -> None:
    response, _ = grpc_web_health_check(stack, origin=ALLOWED_ORIGIN)

    assert response.getheader("access-control-allow-origin") == ALLOWED_ORIGIN
    exposed = {
        h.strip() for h in response.getheader("access-control-expose-headers", "").split(",")
    }
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed


def test_grpc_web_response_has_no_cors_for_other_origins(stack: Stack) -> None:
    response, _ = grpc_web_health_check(stack, origin=DISALLOWED_ORIGIN)

    assert response.getheader("access-control-allow-origin") is None


def preflight(stack: Stack, origin: str) -> http.client.HTTPResponse:
    response, _ = http1(
        stack,
        "OPTIONS",
        "/nuell.auth.v1.AuthService/Login",
        {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
        },
    )
    return response


def test_preflight_from_allowed_origin(stack: Stack) -> None:
    response = preflight(stack, ALLOWED_ORIGIN)

    assert response.status == 200
    assert response.getheader("access-control-allow-origin") == ALLOWED_ORIGIN
    assert "POST" in response.getheader("access-control-allow-methods", "").split(",")
    allowed = set(response.getheader("access-control-allow-headers", "").split(","))
    assert {
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    } <= allowed
    assert int(response.getheader("access-control-max-age", "0")) > 0


@pytest.mark.parametrize(
    "origin", [DISALLOWED_ORIGIN, "http://localhost:3001", "https://nue-japan.com.evil.example"]
)
def test_preflight_from_other_origins_is_not_allowed(stack: Stack, origin: str) -> None:
    response = preflight(stack, origin)

    assert response.getheader("access-control-allow-origin") is None
    # Answered by Envoy: a gateway reply would carry a grpc-status.
    assert response.getheader("grpc-status") is None


# --- what the edge reveals -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        (
            "POST",
            "/grpc.health.v1.Health/Check",
            {"content-type": "application/grpc-web+proto"},
            200,
        ),
        ("GET", "/", {}, 404),
        ("GET", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", {}, 404),
        (
            "OPTIONS",
            "/nuell.posts.v1.PostService/ListPosts",
            {"origin": ALLOWED_ORIGIN, "access-control-request-method": "POST"},
            200,
        ),
    ],
)
def test_edge_does_not_reveal_its_software(
    stack: Stack, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    body = struct.pack(">BI", 0, 0) if method == "POST" else b""
    response, _ = http1(stack, method, path, headers, body)

    assert response.status == status
    names = {name.lower() for name, _ in response.getheaders()}
    assert "server" not in names
    assert not {name for name in names if name.startswith("x-envoy")}
