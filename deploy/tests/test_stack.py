"""The real stack, piece by piece: rust_compute, py_gateway and Envoy in
front, probed with real grpcurl, grpcio and plain HTTP (gRPC-Web in both
its binary and text modes, CORS, and what every edge response carries)."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from nuell.auth.v1 import auth_service_pb2
from nuell.compute.v1 import compute_service_pb2  # noqa: F401 - registers the service
from nuell.posts.v1 import post_service_pb2
from nuell.sessions.v1 import session_service_pb2  # noqa: F401 - registers the service
from nuell.users.v1 import user_service_pb2

from deploy.settings import EDGE_GRPC_SERVICES, EDGE_SECURITY_HEADERS
from deploy.tests.support import (
    ALLOWED_ORIGIN,
    CORS_ALLOW_HEADERS_PINNED,
    Backend,
    Edge,
    Reply,
    grpc_web_call,
    grpc_web_frame,
    grpcurl,
    health_status,
    http_request,
    mark_verified,
    parse_frames,
    tls_client_context,
    user_exists,
    write_health_protoset,
)

NUELL_SERVICES = [s for s in EDGE_GRPC_SERVICES if s.startswith("nuell.")]
REFLECTION = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
DISALLOWED_ORIGIN = "https://evil.example"
PASSWORD = "Edge-route-check-7!"

# Every method the edge routes, from the same descriptors the gateway serves.
EDGE_METHODS = [
    (f"{service}/{method.name}", method.client_streaming or method.server_streaming)
    for service in EDGE_GRPC_SERVICES
    for method in descriptor_pool.Default().FindServiceByName(service).methods
]
UNARY_METHODS = [method for method, streaming in EDGE_METHODS if not streaming]
STREAMING_METHODS = [method for method, streaming in EDGE_METHODS if streaming]
HEALTH_WATCH = "grpc.health.v1.Health/Watch"


@dataclass(frozen=True)
class Stack(Backend):
    """The backend and, in front of it, the edge's plaintext listener."""

    edge: str = ""  # ip:port
    edge_port: int = 0
    protoset: Path = Path()  # grpc.health.v1 for grpcurl at the edge, which has no reflection


@pytest.fixture(scope="module")
def stack(backend: Backend, edge: Edge, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    protoset = write_health_protoset(tmp_path_factory.mktemp("stack") / "health.protoset")
    return Stack(**vars(backend), edge=edge.target, edge_port=edge.http_port, protoset=protoset)


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


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("service", REFLECTION)
def test_edge_refuses_reflection_over_grpc_web(stack: Stack, service: str, text: bool) -> None:
    reply = grpc_web_call(stack.edge_port, f"{service}/ServerReflectionInfo", text=text)

    assert reply.status == 404
    assert "grpc-status" not in reply.headers


def test_edge_reaches_only_the_gateway(edge: Edge, stack: Stack) -> None:
    reply = http_request(edge.admin_port, "GET", "/clusters?format=json", {})
    clusters = json.loads(reply.body)["cluster_statuses"]
    compute_port = int(stack.compute.rpartition(":")[2])

    assert [cluster["name"] for cluster in clusters] == ["py_gateway"]
    (host,) = clusters[0]["host_statuses"]
    assert host["address"]["socket_address"]["port_value"] == int(stack.gateway.rpartition(":")[2])
    assert host["address"]["socket_address"]["port_value"] != compute_port
    # Active gRPC health checking has seen the gateway serve.
    assert host["health_status"]["eds_health_status"] == "HEALTHY"
    assert not host["health_status"].get("failed_active_health_check", False)


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
    credentials = json.dumps({"email": email, "password": PASSWORD})
    call_edge(stack, nuell_protoset, "nuell.auth.v1.AuthService/Register", credentials)
    mark_verified(stack.database_url, email)
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

    # Authenticated and routed: the gateway answers (an analysis, or, while its
    # forwarding to rust_compute is unfinished, UNIMPLEMENTED or UNAVAILABLE);
    # never Envoy's "unknown service", and the edge has no route to compute.
    if result.returncode == 0:
        assert "analysis" in json.loads(result.stdout)
    else:
        assert "Code: Unimplemented" in result.stderr or "Code: Unavailable" in result.stderr
        assert "unknown service" not in result.stderr


# --- gRPC-Web: every public RPC, both modes ------------------------------------


def native_stream_status(stack: Stack, method: str) -> tuple[int, str]:
    """(code, message) the gateway itself ends a one-empty-message stream with."""
    with grpc.insecure_channel(stack.gateway) as channel:
        try:
            list(channel.stream_stream(f"/{method}")(iter([b""]), timeout=10))
        except grpc.RpcError as error:
            return error.code().value[0], error.details() or ""
    return 0, ""


def native_status(stack: Stack, method: str) -> tuple[int, str]:
    """(code, message) the gateway itself gives an empty request to `method`."""
    with grpc.insecure_channel(stack.gateway) as channel:
        try:
            channel.unary_unary(f"/{method}")(b"", timeout=10)
        except grpc.RpcError as error:
            return error.code().value[0], error.details() or ""
    return 0, ""


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("method", UNARY_METHODS)
def test_every_unary_rpc_over_grpc_web(stack: Stack, method: str, text: bool) -> None:
    reply = grpc_web_call(stack.edge_port, method, text=text, origin=ALLOWED_ORIGIN)

    expected_type = "application/grpc-web-text" if text else "application/grpc-web"
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith(expected_type)
    # Exactly what the gateway says to the same call over native gRPC.
    assert (reply.grpc_status, reply.grpc_message) == native_status(stack, method)
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("method", sorted(set(STREAMING_METHODS) - {HEALTH_WATCH}))
def test_every_streaming_rpc_reaches_the_gateway_over_grpc_web(
    stack: Stack, method: str, text: bool
) -> None:
    # gRPC-Web sends the whole request stream, then reads the answer.
    reply = grpc_web_call(stack.edge_port, method, text=text)

    assert reply.status == 200, reply
    assert (reply.grpc_status, reply.grpc_message) == native_stream_status(stack, method)


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_server_streams_flow_over_grpc_web(stack: Stack, text: bool) -> None:
    # Health/Watch never ends by itself: read its first message as it arrives.
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    body = grpc_web_frame(b"")
    connection = http.client.HTTPConnection("127.0.0.1", stack.edge_port, timeout=10)
    try:
        connection.request(
            "POST",
            f"/{HEALTH_WATCH}",
            base64.b64encode(body) if text else body,
            {"content-type": kind, "accept": kind, "x-grpc-web": "1"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith(kind.split("+")[0])
        # A 7-byte frame: 12 characters in base64, padding included.
        first = response.read(12) if text else response.read(7)
    finally:
        connection.close()

    flags, message = parse_frames(base64.b64decode(first) if text else first)[0]
    assert flags == 0
    status = health_pb2.HealthCheckResponse.FromString(message).status
    assert status == health_pb2.HealthCheckResponse.SERVING


class FrameReader:
    """gRPC-Web frames of a response as they arrive. In text mode Envoy encodes
    each chunk alone, padding included, so every 4 characters decode alone."""

    def __init__(self, response: http.client.HTTPResponse, text: bool) -> None:
        self.response, self.text, self.buffer = response, text, b""

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            chunk = self.response.read(4 if self.text else size - len(self.buffer))
            assert chunk, "the stream ended"
            self.buffer += base64.b64decode(chunk) if self.text else chunk

    def frame(self) -> tuple[int, bytes]:
        self._fill(5)
        flags, length = struct.unpack(">BI", self.buffer[:5])
        self._fill(5 + length)
        payload, self.buffer = self.buffer[5 : 5 + length], self.buffer[5 + length :]
        return flags, payload


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_watch_posts_streams_live_over_grpc_web(
    stack: Stack, signed_in: tuple[str, str], text: bool
) -> None:
    _, token = signed_in
    bearer = {"authorization": f"Bearer {token}"}
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    body = grpc_web_frame(post_service_pb2.WatchPostsRequest().SerializeToString())
    connection = http.client.HTTPConnection("127.0.0.1", stack.edge_port, timeout=15)
    try:
        connection.request(
            "POST",
            "/nuell.posts.v1.PostService/WatchPosts",
            base64.b64encode(body) if text else body,
            {"content-type": kind, "accept": kind, "x-grpc-web": "1", "origin": ALLOWED_ORIGIN}
            | bearer,
        )
        # The headers come as soon as the stream is open, before any event.
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("access-control-allow-origin") == ALLOWED_ORIGIN
        assert "grpc-status" not in {name.lower() for name, _ in response.getheaders()}
        content = f"エッジ越しの投稿 {uuid.uuid4().hex[:6]}"
        with grpc.insecure_channel(stack.gateway) as channel:
            create = channel.unary_unary(
                "/nuell.posts.v1.PostService/CreatePost",
                post_service_pb2.CreatePostRequest.SerializeToString,
                post_service_pb2.CreatePostResponse.FromString,
            )
            made = create(
                post_service_pb2.CreatePostRequest(content=content),
                metadata=tuple(bearer.items()),
                timeout=10,
            ).post
        reader = FrameReader(response, text)
        while True:  # events of other tests' posts may come first
            flags, payload = reader.frame()
            assert flags == 0, payload
            event = post_service_pb2.PostEvent.FromString(payload)
            if event.post_id == made.id:
                break
    finally:
        connection.close()
    assert event.type == post_service_pb2.POST_EVENT_TYPE_CREATED
    assert event.post.content == content
    assert event.resume_token


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_grpc_web_carries_messages_and_credentials(
    stack: Stack, signed_in: tuple[str, str], text: bool
) -> None:
    email, token = signed_in

    reply = grpc_web_call(
        stack.edge_port,
        "nuell.users.v1.UserService/GetCurrentUser",
        user_service_pb2.GetCurrentUserRequest().SerializeToString(),
        text=text,
        headers={"authorization": f"Bearer {token}"},
    )

    assert reply.grpc_status == 0, reply
    (message,) = reply.messages
    assert user_service_pb2.GetCurrentUserResponse.FromString(message).user.email == email


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_grpc_web_error_details_are_readable_cross_origin(stack: Stack, text: bool) -> None:
    reply = register_via_grpc_web(
        stack, auth_service_pb2.RegisterRequest(email="x", password="short"), text, ALLOWED_ORIGIN
    )

    # Trailers-only: the status travels in HTTP headers, which a browser hides
    # from the page unless they are exposed.
    assert reply.headers["grpc-status"] == "3"
    assert reply.headers["grpc-status-details-bin"]
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= exposed


def register_via_grpc_web(stack: Stack, request: Any, text: bool, origin: str) -> Reply:
    method = "nuell.auth.v1.AuthService/Register"
    return grpc_web_call(
        stack.edge_port, method, request.SerializeToString(), text=text, origin=origin
    )


# --- CORS ---------------------------------------------------------------------------


def preflight(stack: Stack, origin: str, path: str = "/nuell.auth.v1.AuthService/Login") -> Reply:
    return http_request(
        stack.edge_port,
        "OPTIONS",
        path,
        {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web,x-user-agent",
        },
    )


def test_preflight_from_allowed_origin(stack: Stack) -> None:
    response = preflight(stack, ALLOWED_ORIGIN)

    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    methods = set(response.headers["access-control-allow-methods"].split(","))
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
    allowed = set(response.headers["access-control-allow-headers"].split(","))
    assert allowed == set(CORS_ALLOW_HEADERS_PINNED.split(","))
    assert 0 < int(response.headers["access-control-max-age"]) <= 7200


OTHER_ORIGINS = [
    DISALLOWED_ORIGIN,
    "http://localhost:3001",
    "https://nue-japan.com.evil.example",
    "http://nue-japan.com",  # same host, wrong scheme
    "null",  # sandboxed frames and file:// pages
]


@pytest.mark.parametrize("origin", OTHER_ORIGINS)
def test_preflight_from_other_origins_is_refused(stack: Stack, origin: str) -> None:
    response = preflight(stack, origin)

    assert response.status == 403
    assert "access-control-allow-origin" not in response.headers
    # Answered by Envoy: a gateway reply would carry a grpc-status.
    assert "grpc-status" not in response.headers


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
@pytest.mark.parametrize("origin", OTHER_ORIGINS)
def test_calls_from_other_origins_are_refused_before_the_gateway(
    stack: Stack, origin: str, text: bool
) -> None:
    email = f"refused-{uuid.uuid4().hex[:12]}@example.com"
    reply = register_via_grpc_web(
        stack, auth_service_pb2.RegisterRequest(email=email, password=PASSWORD), text, origin
    )

    assert reply.status == 403
    assert "access-control-allow-origin" not in reply.headers
    assert "grpc-status" not in reply.headers
    assert not user_exists(stack.database_url, email)


def test_calls_without_an_origin_are_not_browser_calls_and_pass(stack: Stack) -> None:
    # Servers and CLIs send no Origin; CORS is the browser's rule, not theirs.
    reply = grpc_web_call(stack.edge_port, "grpc.health.v1.Health/Check")

    assert reply.grpc_status == 0
    assert "access-control-allow-origin" not in reply.headers


# --- what every edge response carries, and what none reveals -------------------------


@pytest.fixture(scope="module")
def calls(stack: Stack, edge: Edge) -> dict[str, Any]:
    """One call per kind of edge response, by name; each returns a Reply."""
    port = stack.edge_port
    tls = tls_client_context(edge.settings.edge_tls_cert.parent / "ca.crt")
    return {
        "grpc-web success": lambda: grpc_web_call(port, "grpc.health.v1.Health/Check"),
        "grpc-web text success": lambda: grpc_web_call(
            port, "grpc.health.v1.Health/Check", text=True
        ),
        "gateway error": lambda: grpc_web_call(
            port, "nuell.users.v1.UserService/GetCurrentUser", origin=ALLOWED_ORIGIN
        ),
        "preflight": lambda: preflight(stack, ALLOWED_ORIGIN),
        "refused preflight": lambda: preflight(stack, DISALLOWED_ORIGIN),
        "refused origin": lambda: grpc_web_call(
            port, "grpc.health.v1.Health/Check", origin=DISALLOWED_ORIGIN
        ),
        "unknown path": lambda: http_request(port, "GET", "/", {}),
        "reflection": lambda: grpc_web_call(
            port, "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ),
        "malformed request": lambda: http_request(port, "GET", "/", {"content-length": "x"}),
        "tls success": lambda: grpc_web_call(
            edge.https_port, "grpc.health.v1.Health/Check", tls=tls, host="localhost"
        ),
    }


RESPONSES = [
    "grpc-web success",
    "grpc-web text success",
    "gateway error",
    "preflight",
    "refused preflight",
    "refused origin",
    "unknown path",
    "reflection",
    "malformed request",
    "tls success",
]
EXPECTED_STATUS = {
    "refused preflight": 403,
    "refused origin": 403,
    "unknown path": 404,
    "reflection": 404,
    "malformed request": 400,
}


@pytest.mark.parametrize("which", RESPONSES)
def test_every_response_carries_the_security_headers(calls: dict[str, Any], which: str) -> None:
    reply = calls[which]()

    assert reply.status == EXPECTED_STATUS.get(which, 200), reply
    for name, value in EDGE_SECURITY_HEADERS:
        assert reply.headers.get(name) == value, f"{which}: {name}"
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("which", RESPONSES)
def test_no_response_reveals_the_software(calls: dict[str, Any], which: str) -> None:
    reply = calls[which]()

    names = set(reply.headers)
    assert "server" not in names
    assert "via" not in names
    assert not {name for name in names if name.startswith("x-envoy")}
    assert b"envoy" not in reply.body.lower()
    assert b"rbac" not in reply.body.lower()
