"""Every protocol the edge speaks, from the one contract, through a running
Envoy in front of the real gateway: Connect (JSON and binary, POST and GET)
and REST/JSON (the contract's `google.api.http` paths), with their error
shapes, and the same limits whichever protocol or path spelling reaches a
method."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import struct
import subprocess
import uuid
from collections.abc import Callable
from contextlib import closing
from typing import Any
from urllib.parse import quote

import pytest
from google.rpc import error_details_pb2
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.posts.v1 import post_service_pb2 as posts_pb

from deploy.settings import CONTRACT, REPO
from deploy.tests.support import (
    ALLOWED_ORIGIN,
    Backend,
    Edge,
    Reply,
    grpc_web_call,
    grpc_web_frame,
    http_request,
    mark_verified,
)

PASSWORD = "Protocol-Pass-7!"
JAPANESE = "東京の朝、鵺(ぬえ)が鳴く。今日は晴れ☀️"
JSON = {"content-type": "application/json"}


def connect(edge: Edge, method: str, body: dict[str, Any], **headers: str) -> Reply:
    """A Connect unary call in JSON, the way `curl -d '{...}'` makes it (no
    Connect-Protocol-Version header: the protocol lets a client leave it out)."""
    return http_request(
        edge.http_port, "POST", f"/{method}", JSON | headers, json.dumps(body).encode()
    )


def rest(edge: Edge, verb: str, path: str, body: dict[str, Any] | None = None, **headers: str):
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    return http_request(edge.http_port, verb, path, JSON | headers, payload)


def parsed(reply: Reply) -> Any:
    assert reply.headers["content-type"].startswith("application/json"), reply
    return json.loads(reply.body)


def connect_detail(error: dict[str, Any], message: Any) -> Any:
    """The first detail of `message`'s type in a Connect JSON error, decoded.
    Connect names the type bare (`google.rpc.ErrorInfo`), not as a type URL."""
    name = message.DESCRIPTOR.full_name
    for detail in error.get("details", []):
        if detail["type"] == name:
            value = detail["value"]
            return message.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    raise AssertionError(f"no {name} in {error}")


@pytest.fixture(scope="module")
def member(edge: Edge, backend: Backend) -> dict[str, str]:
    """A verified account registered over Connect JSON, and its access token."""
    email = f"proto-{uuid.uuid4().hex[:10]}@example.jp"
    registered = connect(
        edge, "nuell.auth.v1.AuthService/Register", {"email": email, "password": PASSWORD}
    )
    assert registered.status == 200, registered
    mark_verified(backend.database_url, email)
    login = rest(edge, "POST", "/v1/auth:login", {"email": email, "password": PASSWORD})
    assert login.status == 200, login
    token = parsed(login)["accessToken"]
    return {"email": email, "authorization": f"Bearer {token}"}


# --- Connect ----------------------------------------------------------------------


def test_connect_json_error_is_connects_shape_with_the_google_rpc_details(edge: Edge) -> None:
    reply = connect(
        edge,
        "nuell.auth.v1.AuthService/Login",
        {"email": "nobody-他人@example.jp", "password": "Wrong-Pass-123!"},
    )

    assert reply.status == 401
    error = parsed(reply)
    assert error["code"] == "unauthenticated"
    assert error["message"] == "invalid email or password"
    assert connect_detail(error, error_details_pb2.ErrorInfo()).reason == "INVALID_CREDENTIALS"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_connect_json_validation_errors_name_every_broken_field(edge: Edge) -> None:
    reply = connect(
        edge, "nuell.auth.v1.AuthService/Register", {"email": "not-an-address", "password": "短い"}
    )

    assert reply.status == 400
    error = parsed(reply)
    assert error["code"] == "invalid_argument"
    fields = {
        v.field for v in connect_detail(error, error_details_pb2.BadRequest()).field_violations
    }
    assert {"email", "password"} <= fields


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"email": 5}', b'{"unknownField": "x"}', b"\x00\xff\xfe"],
    ids=["malformed", "wrong-type", "unknown-field", "binary"],
)
def test_connect_json_that_does_not_parse_is_invalid_argument(edge: Edge, body: bytes) -> None:
    reply = http_request(edge.http_port, "POST", "/nuell.auth.v1.AuthService/Login", JSON, body)

    assert reply.status == 400, reply
    error = parsed(reply)
    assert error["code"] == "invalid_argument"
    assert connect_detail(error, error_details_pb2.ErrorInfo()).reason == "MALFORMED_REQUEST"
    assert "Traceback" not in reply.body.decode("utf-8", "replace")


def test_connect_json_round_trip_keeps_japanese_text(edge: Edge, member: dict[str, str]) -> None:
    auth = {"authorization": member["authorization"]}
    created = connect(edge, "nuell.posts.v1.PostService/CreatePost", {"content": JAPANESE}, **auth)
    assert created.status == 200, created
    assert created.headers["content-type"] == "application/json"
    post = parsed(created)["post"]
    assert post["content"] == JAPANESE
    assert JAPANESE.encode() in created.body  # UTF-8 as it is, not \\u escapes

    # The same post over Connect GET (a read marked NO_SIDE_EFFECTS), JSON encoded.
    message = quote(json.dumps({"id": post["id"]}))
    read = http_request(
        edge.http_port,
        "GET",
        f"/nuell.posts.v1.PostService/GetPost?connect=v1&encoding=json&message={message}",
        auth,
    )
    assert read.status == 200, read
    assert parsed(read)["post"]["content"] == JAPANESE
    # A private reply: no cache may keep it.
    assert read.headers["cache-control"] == "no-store"


def test_connect_binary_post_and_get(edge: Edge, member: dict[str, str]) -> None:
    auth = {"authorization": member["authorization"]}
    request = posts_pb.CreatePostRequest(content="バイナリで送る投稿: 京都の紅葉は今が見頃")
    created = http_request(
        edge.http_port,
        "POST",
        "/nuell.posts.v1.PostService/CreatePost",
        {"content-type": "application/proto", "connect-protocol-version": "1"} | auth,
        request.SerializeToString(),
    )
    assert created.status == 200, created
    assert created.headers["content-type"] == "application/proto"
    post = posts_pb.CreatePostResponse.FromString(created.body).post
    assert post.content == request.content

    message = base64.urlsafe_b64encode(posts_pb.GetPostRequest(id=post.id).SerializeToString())
    read = http_request(
        edge.http_port,
        "GET",
        "/nuell.posts.v1.PostService/GetPost?connect=v1&encoding=proto&base64=1"
        f"&message={message.decode().rstrip('=')}",
        auth,
    )
    assert read.status == 200, read
    assert posts_pb.GetPostResponse.FromString(read.body).post.content == request.content


@pytest.mark.parametrize(
    "method",
    ["nuell.auth.v1.AuthService/Logout", "nuell.posts.v1.PostService/DeletePost"],
)
def test_connect_get_is_only_for_reads(edge: Edge, member: dict[str, str], method: str) -> None:
    reply = http_request(
        edge.http_port,
        "GET",
        f"/{method}?connect=v1&encoding=json&message=%7B%7D",
        {"authorization": member["authorization"]},
    )

    assert reply.status == 404  # Connect reads 404 as UNIMPLEMENTED


# --- Connect streaming -------------------------------------------------------------

WATCH = "/nuell.posts.v1.PostService/WatchPosts"
CONNECT_JSON_STREAM = {"content-type": "application/connect+json", "connect-protocol-version": "1"}
END_STREAM = 0x02


def envelope(message: dict[str, Any]) -> bytes:
    """A Connect stream's message: the same 5-byte envelope as gRPC-Web's frame."""
    return grpc_web_frame(json.dumps(message).encode())


def read_envelope(response: http.client.HTTPResponse) -> tuple[int, bytes]:
    """(flags, payload) of the next Connect envelope, as soon as it arrives."""
    head = response.read(5)
    assert len(head) == 5, f"the stream ended: {head!r}"
    flags, length = struct.unpack(">BI", head)
    payload = response.read(length)
    assert len(payload) == length, "truncated envelope"
    return flags, payload


def test_connect_json_stream_delivers_events_with_japanese_text(
    edge: Edge, member: dict[str, str]
) -> None:
    auth = {"authorization": member["authorization"]}
    content = "ライブ配信のテスト🎌"
    with closing(http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=15)) as stream:
        stream.request("POST", WATCH, envelope({}), CONNECT_JSON_STREAM | auth)
        # The headers come as soon as the stream is open, before any event.
        response = stream.getresponse()
        assert response.status == 200
        assert response.getheader("content-type") == "application/connect+json"

        created = connect(
            edge, "nuell.posts.v1.PostService/CreatePost", {"content": content}, **auth
        )
        assert created.status == 200, created
        post = parsed(created)["post"]
        while True:  # events of other tests' posts may come first
            flags, payload = read_envelope(response)
            assert flags == 0, payload
            event = json.loads(payload)
            if event.get("postId") == post["id"]:
                break

    assert event["type"] == "POST_EVENT_TYPE_CREATED"
    assert event["post"]["content"] == content
    assert content.encode() in payload  # UTF-8 as it is, not \\u escapes
    assert event["resumeToken"]


@pytest.mark.parametrize("codec", ["json", "proto"])
def test_connect_stream_without_a_token_ends_unauthenticated(edge: Edge, codec: str) -> None:
    # An empty request: `{}` in JSON, no bytes in proto.
    body = envelope({}) if codec == "json" else grpc_web_frame(b"")
    headers = CONNECT_JSON_STREAM | {"content-type": f"application/connect+{codec}"}
    with closing(http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=15)) as stream:
        stream.request("POST", WATCH, body, headers)
        response = stream.getresponse()
        assert response.status == 200  # a stream's error is in its end-stream message
        assert response.getheader("content-type") == f"application/connect+{codec}"
        flags, payload = read_envelope(response)
        assert response.read() == b""  # nothing after the end of the stream

    assert flags == END_STREAM, payload
    error = json.loads(payload)["error"]
    assert error["code"] == "unauthenticated"
    assert error["message"] == "this call needs an access token"
    # Connect's bare type name, which clients look details up by (the bridge
    # writes the type URL; the edge rewrites the end-stream message).
    (detail,) = error["details"]
    assert detail["type"] == "google.rpc.ErrorInfo"
    info = error_details_pb2.ErrorInfo.FromString(
        base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
    )
    assert info.reason == "MISSING_TOKEN"


# --- buf curl: a client nobody here wrote, in each of its protocols --------------

BUF = REPO / "proto" / "node_modules" / ".bin" / "buf"


def buf_curl(edge: Edge, protocol: str, method: str, body: dict[str, Any], *headers: str):
    command = [str(BUF), "curl", "--schema", str(CONTRACT), "--protocol", protocol]
    if protocol == "grpc":
        command.append("--http2-prior-knowledge")  # gRPC needs HTTP/2; plaintext here
    for header in headers:
        command += ["-H", header]
    command += ["-d", json.dumps(body), f"http://127.0.0.1:{edge.http_port}/{method}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("protocol", ["grpc", "grpcweb", "connect"])
def test_buf_curl_in_every_protocol(edge: Edge, member: dict[str, str], protocol: str) -> None:
    me = buf_curl(
        edge,
        protocol,
        "nuell.users.v1.UserService/GetCurrentUser",
        {},
        f"Authorization: {member['authorization']}",
    )
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["email"] == member["email"]

    refused = buf_curl(
        edge,
        protocol,
        "nuell.auth.v1.AuthService/Login",
        {"email": "誰か@example.jp", "password": "Wrong-Pass-123!"},
    )
    assert refused.returncode != 0
    error = json.loads(refused.stderr)  # buf curl prints a failed call's error there
    assert error["code"] == "unauthenticated"
    assert connect_detail(error, error_details_pb2.ErrorInfo()).reason == "INVALID_CREDENTIALS"


# --- REST/JSON --------------------------------------------------------------------


def test_rest_posts_create_read_list_update_delete(edge: Edge, member: dict[str, str]) -> None:
    auth = {"authorization": member["authorization"]}
    # Not JAPANESE itself: a near duplicate of the caller's recent post is refused.
    content = "REST で書いた投稿: 富士山の写真を十枚、金曜に公開します"
    created = rest(edge, "POST", "/v1/posts", {"content": content}, **auth)
    assert created.status == 200, created
    post = parsed(created)["post"]

    read = rest(edge, "GET", f"/v1/posts/{post['id']}", **auth)
    assert read.status == 200
    assert parsed(read)["post"]["content"] == content

    page = rest(edge, "GET", f"/v1/posts?pageSize=1&authorId={post['authorId']}", **auth)
    assert page.status == 200
    assert [p["id"] for p in parsed(page)["posts"]] == [post["id"]]

    changed = rest(
        edge,
        "PATCH",
        f"/v1/posts/{post['id']}?updateMask=content",
        {"content": "書き直した本文"},
        **auth,
    )
    assert changed.status == 200, changed
    assert parsed(changed)["post"]["content"] == "書き直した本文"

    assert rest(edge, "DELETE", f"/v1/posts/{post['id']}", **auth).status == 200
    gone = rest(edge, "GET", f"/v1/posts/{post['id']}", **auth)
    assert gone.status == 404
    assert parsed(gone)["code"] == 5  # google.rpc.Status, as google.rpc's table maps it


def test_rest_users_and_sessions(edge: Edge, member: dict[str, str]) -> None:
    auth = {"authorization": member["authorization"]}
    me = rest(edge, "GET", "/v1/users/me", **auth)
    assert me.status == 200, me
    assert parsed(me)["user"]["email"] == member["email"]

    sessions = rest(edge, "GET", "/v1/sessions", **auth)
    assert sessions.status == 200, sessions
    assert any(s.get("current") for s in parsed(sessions)["sessions"])


@pytest.mark.parametrize(
    ("verb", "path", "status", "code"),
    [
        ("GET", "/v1/posts/not-a-uuid", 400, 3),
        ("GET", "/v1/posts?pageSize=-1", 400, 3),
        ("GET", "/v1/users/me", 401, 16),  # no token
    ],
)
def test_rest_errors_are_google_rpc_status_json(
    edge: Edge, member: dict[str, str], verb: str, path: str, status: int, code: int
) -> None:
    headers = {} if code == 16 else {"authorization": member["authorization"]}
    reply = rest(edge, verb, path, **headers)

    assert reply.status == status, reply
    error = parsed(reply)
    assert error["code"] == code
    assert error["message"]
    assert all(d["@type"].startswith("type.googleapis.com/google.rpc.") for d in error["details"])


def test_rest_unknown_query_parameter_is_refused(edge: Edge, member: dict[str, str]) -> None:
    reply = rest(edge, "GET", "/v1/posts?pageSize=1&bogus=1", authorization=member["authorization"])

    assert reply.status == 400


# --- one limit, whatever the protocol or the spelling -----------------------------

_clients = itertools.count(200)
RATE_PER_MINUTE, BURST = 1, 3


@pytest.fixture(scope="module")
def strict_edge(strict_edge_factory: Callable[[int, int], Edge]) -> Edge:
    return strict_edge_factory(RATE_PER_MINUTE, BURST)


LOGIN = {"email": "", "password": ""}  # refused at once by the gateway: no hashing
LOGIN_PROTO = auth_pb.LoginRequest().SerializeToString()


def login_attempts(edge: Edge, source: str) -> list[tuple[str, Reply]]:
    """Login over every protocol and every spelling of its paths, from `source`."""

    def post(path: str, headers: dict[str, str], body: bytes) -> Reply:
        return http_request(edge.http_port, "POST", path, headers, body, host=source, source=source)

    json_body = json.dumps(LOGIN).encode()
    connect_proto = {"content-type": "application/proto", "connect-protocol-version": "1"}
    grpc_path = "/nuell.auth.v1.AuthService/Login"
    return [
        (
            "grpc-web",
            grpc_web_call(
                edge.http_port,
                grpc_path[1:],
                LOGIN_PROTO,
                origin=ALLOWED_ORIGIN,
                host=source,
                source=source,
            ),
        ),
        ("connect json", post(grpc_path, JSON, json_body)),
        ("connect proto", post(grpc_path, connect_proto, LOGIN_PROTO)),
        ("rest", post("/v1/auth:login", JSON, json_body)),
        ("rest //", post("//v1//auth:login", JSON, json_body)),
        ("rest %3A", post("/v1/auth%3Alogin", JSON, json_body)),
        ("rest %3a", post("/v1/auth%3alogin", JSON, json_body)),
        ("rest trailing /", post("/v1/auth:login/", JSON, json_body)),
        ("rest upper case", post("/V1/AUTH:LOGIN", JSON, json_body)),
        ("rest dot segment", post("/v1/x/../auth:login", JSON, json_body)),
        ("rest %2F", post("/v1%2Fauth:login", JSON, json_body)),
        ("grpc //", post("//nuell.auth.v1.AuthService//Login", JSON, json_body)),
        ("grpc trailing /", post(f"{grpc_path}/", JSON, json_body)),
        ("grpc lower case", post(grpc_path.lower(), JSON, json_body)),
        ("grpc %2F", post("/nuell.auth.v1.AuthService%2FLogin", JSON, json_body)),
        ("rest query", post("/v1/auth:login?email=x@example.jp", JSON, json_body)),
    ]


def reached_login(reply: Reply) -> bool:
    """Whether the gateway's Login answered (it refuses the empty login as
    INVALID_ARGUMENT), rather than the edge."""
    if reply.status == 200 and reply.grpc_status is not None:  # gRPC-Web
        return reply.grpc_status == 3
    if reply.status != 400 or not reply.headers.get("content-type", "").startswith(
        "application/json"
    ):
        return False
    error = json.loads(reply.body)
    return error.get("code") in ("invalid_argument", 3) and "rules of its fields" in error.get(
        "message", ""
    )


def test_no_protocol_or_spelling_gets_past_the_login_limit(strict_edge: Edge) -> None:
    source = f"127.0.0.{next(_clients)}"
    attempts = login_attempts(strict_edge, source) + login_attempts(strict_edge, source)

    reached = [name for name, reply in attempts if reached_login(reply)]
    refused = [name for name, reply in attempts if reply.status == 429 or reply.grpc_status == 8]

    # One bucket for Login per client, whichever way in: at most BURST calls reach it.
    assert len(reached) == BURST, reached
    assert refused, attempts
    # Every other answer is a refusal or a 4xx of the edge's own: never a 5xx.
    assert all(reply.status < 500 for _, reply in attempts), attempts


# --- the same protection on every path ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/posts", JSON),
        ("/nuell.posts.v1.PostService/CreatePost", JSON),
        ("/nuell.posts.v1.PostService/CreatePost", {"content-type": "application/proto"}),
    ],
    ids=["rest", "connect-json", "connect-proto"],
)
def test_bodies_over_the_limit_are_refused_on_every_path(
    edge: Edge, member: dict[str, str], path: str, headers: dict[str, str]
) -> None:
    too_big = edge.settings.max_request_bytes + 1024
    body = json.dumps({"content": "あ" * (too_big // 3)}).encode()

    try:
        reply = http_request(
            edge.http_port, "POST", path, headers | {"authorization": member["authorization"]}, body
        )
    except ConnectionResetError:
        return  # refused and closed before the client had finished sending: also a refusal

    # The edge's refusal in each protocol's own shape: RESOURCE_EXHAUSTED.
    assert reply.status == 429, reply
    assert parsed(reply)["code"] in (8, "resource_exhausted")
    assert parsed(reply)["message"] == "request too large"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/posts",
        "/v1/auth:login",
        "/nuell.posts.v1.PostService/GetPost",
        "/nuell.auth.v1.AuthService/Login",
    ],
)
def test_cors_is_the_same_allowlist_on_every_path(edge: Edge, path: str) -> None:
    def preflight(origin: str) -> Reply:
        return http_request(
            edge.http_port,
            "OPTIONS",
            path,
            {
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type",
            },
        )

    allowed = preflight(ALLOWED_ORIGIN)
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = preflight("https://evil.example")
    assert refused.status == 403
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("verb", "path", "headers"),
    [
        ("POST", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", JSON),
        ("POST", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", JSON),
        (
            "GET",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo?connect=v1&encoding=json&message=%7B%7D",
            {},
        ),
    ],
)
def test_no_reflection_over_connect(
    edge: Edge, verb: str, path: str, headers: dict[str, str]
) -> None:
    reply = http_request(edge.http_port, verb, path, headers, b'{"listServices": ""}')

    assert reply.status == 404


def test_the_edge_serves_the_openapi_document_only_to_get(edge: Edge) -> None:
    document = http_request(edge.http_port, "GET", "/openapi.json", {})
    assert document.status == 200
    assert json.loads(document.body)["openapi"].startswith("3.1")
    assert document.headers["x-content-type-options"] == "nosniff"

    assert http_request(edge.http_port, "POST", "/openapi.json", JSON, b"{}").status == 404


@pytest.mark.parametrize("path", ["/v1/users/me", "/nuell.users.v1.UserService/GetCurrentUser"])
def test_a_header_name_grpc_cannot_carry_is_a_client_error(
    edge: Edge, member: dict[str, str], path: str
) -> None:
    headers = {"authorization": member["authorization"], "x-odd!name": "1"}
    verb = "GET" if path.startswith("/v1/") else "POST"
    reply = http_request(
        edge.http_port, verb, path, JSON | headers, b"" if verb == "GET" else b"{}"
    )

    assert reply.status == 400, reply


def test_a_preflight_of_a_connect_get_is_answered_by_cors(edge: Edge) -> None:
    # The browser sends the GET's whole URL, `?connect=v1…` included.
    reply = http_request(
        edge.http_port,
        "OPTIONS",
        "/nuell.users.v1.UserService/GetCurrentUser?connect=v1&encoding=proto&base64=1&message=",
        {
            "origin": ALLOWED_ORIGIN,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization,connect-timeout-ms",
        },
    )

    assert reply.status == 200, reply
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
