"""What the edge refuses on its own, through a running Envoy in front of the
real gateway: too many credential attempts from one client, bodies over the
size limit, and TLS as a browser would check it."""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Callable

import grpc
import pytest
from nuell.auth.v1 import auth_service_pb2
from nuell.compute.v1 import compute_service_pb2

from deploy.settings import EDGE_RATE_LIMITED_METHODS
from deploy.tests.support import (
    ALLOWED_ORIGIN,
    Edge,
    Reply,
    grpc_web_call,
    http_request,
    tls_client_context,
)

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
# One token back every second; 3 calls at once.
RATE_PER_MINUTE, BURST = 60, 3
REFILL_SECONDS = 60 / RATE_PER_MINUTE

_clients = itertools.count(2)


def new_client() -> str:
    """A client address of its own (all of 127/8 is this machine), so its bucket is full."""
    return f"127.0.0.{next(_clients)}"


@pytest.fixture(scope="module")
def strict_edge(strict_edge_factory: Callable[[int, int], Edge]) -> Edge:
    """An edge with a tiny credentials bucket, in front of the session's gateway."""
    return strict_edge_factory(RATE_PER_MINUTE, BURST)


# An empty login: the gateway refuses it at once (INVALID_ARGUMENT, no password
# hashing), so a burst takes milliseconds, far less than one refill. Every
# attempt counts, valid or not.
EMPTY_LOGIN = auth_service_pb2.LoginRequest()


def login_over_grpc_web(edge: Edge, source: str, *, text: bool = False) -> Reply:
    return grpc_web_call(
        edge.http_port,
        "nuell.auth.v1.AuthService/Login",
        EMPTY_LOGIN.SerializeToString(),
        text=text,
        origin=ALLOWED_ORIGIN,
        host=source,
        source=source,
    )


def login_over_grpc(edge: Edge) -> int:
    """The only caller from 127.0.0.1, the address grpcio connects from."""
    request = EMPTY_LOGIN
    with grpc.insecure_channel(edge.target) as channel:
        login = channel.unary_unary(
            "/nuell.auth.v1.AuthService/Login",
            request_serializer=auth_service_pb2.LoginRequest.SerializeToString,
            response_deserializer=auth_service_pb2.LoginResponse.FromString,
        )
        try:
            login(request, timeout=10)
        except grpc.RpcError as error:
            return int(error.code().value[0])
    return 0


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_grpc_web_credentials_limit_trips_and_recovers(strict_edge: Edge, text: bool) -> None:
    client = new_client()

    replies = [login_over_grpc_web(strict_edge, client, text=text) for _ in range(BURST + 2)]

    codes = [reply.grpc_status for reply in replies]
    assert codes[:BURST] == [INVALID_ARGUMENT] * BURST, codes
    assert codes[BURST:] == [RESOURCE_EXHAUSTED] * 2, codes
    refused = replies[-1]
    # A status the browser can read: HTTP 200, gRPC status in exposed headers.
    assert refused.status == 200
    assert refused.headers["grpc-status"] == str(RESOURCE_EXHAUSTED)
    assert refused.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "grpc-status" in refused.headers["access-control-expose-headers"]
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert not {name for name in refused.headers if name.startswith("x-envoy")}

    time.sleep(REFILL_SECONDS + 0.2)

    assert login_over_grpc_web(strict_edge, client, text=text).grpc_status == INVALID_ARGUMENT


def test_grpc_credentials_limit_trips_and_recovers(strict_edge: Edge) -> None:
    codes = [login_over_grpc(strict_edge) for _ in range(BURST + 2)]

    assert codes[:BURST] == [INVALID_ARGUMENT] * BURST, codes
    assert codes[BURST:] == [RESOURCE_EXHAUSTED] * 2, codes
    time.sleep(REFILL_SECONDS + 0.2)
    assert login_over_grpc(strict_edge) == INVALID_ARGUMENT


def test_the_limit_is_per_client_address(strict_edge: Edge) -> None:
    one, other = new_client(), new_client()
    for _ in range(BURST):
        login_over_grpc_web(strict_edge, one)
    assert login_over_grpc_web(strict_edge, one).grpc_status == RESOURCE_EXHAUSTED

    # Another client still has its whole bucket.
    codes = [login_over_grpc_web(strict_edge, other).grpc_status for _ in range(BURST)]

    assert codes == [INVALID_ARGUMENT] * BURST


def test_the_limit_is_per_method_and_spares_other_calls(strict_edge: Edge) -> None:
    client = new_client()
    for _ in range(BURST + 1):
        login_over_grpc_web(strict_edge, client)

    register = grpc_web_call(
        strict_edge.http_port,
        "nuell.auth.v1.AuthService/Register",
        auth_service_pb2.RegisterRequest(email="x", password="short").SerializeToString(),
        host=client,
        source=client,
    )
    health = grpc_web_call(
        strict_edge.http_port, "grpc.health.v1.Health/Check", host=client, source=client
    )

    assert "nuell.auth.v1.AuthService/Register" in EDGE_RATE_LIMITED_METHODS
    assert register.grpc_status == INVALID_ARGUMENT  # its own bucket, still full
    assert health.grpc_status == 0  # never limited


@pytest.mark.parametrize(
    "method", [m for m in EDGE_RATE_LIMITED_METHODS if not m.endswith("/Login")]
)
def test_every_credential_and_mail_method_has_its_own_bucket(
    strict_edge: Edge, method: str
) -> None:
    """An empty request is refused by the gateway at once (invalid or
    unauthenticated), so a burst costs nothing but still spends the bucket."""
    client = new_client()

    codes = [
        grpc_web_call(strict_edge.http_port, method, host=client, source=client).grpc_status
        for _ in range(BURST + 1)
    ]

    assert RESOURCE_EXHAUSTED not in codes[:BURST], codes
    assert len(set(codes[:BURST])) == 1, codes  # the gateway's own answer, every time
    assert codes[BURST] == RESOURCE_EXHAUSTED, codes


# --- request size ------------------------------------------------------------------


def analyze_request(size: int) -> bytes:
    return compute_service_pb2.AnalyzeRequest(text="a" * size).SerializeToString()


@pytest.mark.parametrize("text", [False, True], ids=["binary", "text"])
def test_oversized_grpc_web_request_is_refused(edge: Edge, text: bool) -> None:
    too_big = edge.settings.max_request_bytes + 1024

    reply = grpc_web_call(
        edge.http_port,
        "nuell.compute.v1.ComputeService/Analyze",
        analyze_request(too_big),
        text=text,
        origin=ALLOWED_ORIGIN,
    )

    assert reply.status == 200
    assert reply.grpc_status == RESOURCE_EXHAUSTED
    assert reply.grpc_message == "request too large"
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert reply.headers["x-frame-options"] == "DENY"


def test_oversized_grpc_request_is_refused(edge: Edge) -> None:
    too_big = edge.settings.max_request_bytes + 1024
    with grpc.insecure_channel(edge.target) as channel:
        analyze = channel.unary_unary("/nuell.compute.v1.ComputeService/Analyze")
        with pytest.raises(grpc.RpcError) as caught:
            analyze(analyze_request(too_big), timeout=30)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "request too large"  # the edge's words, not the gateway's


def test_request_under_the_limit_reaches_the_gateway(edge: Edge) -> None:
    reply = grpc_web_call(
        edge.http_port, "nuell.compute.v1.ComputeService/Analyze", analyze_request(64 * 1024)
    )

    # The gateway's answer (it asks for a token), not the edge's refusal.
    assert reply.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0]


def test_oversized_headers_are_refused(edge: Edge) -> None:
    reply = http_request(
        edge.http_port,
        "POST",
        "/grpc.health.v1.Health/Check",
        {"content-type": "application/grpc-web+proto", "x-padding": "a" * 64 * 1024},
    )

    assert reply.status == 431
    assert reply.headers["x-content-type-options"] == "nosniff"


# --- TLS -------------------------------------------------------------------------------


def test_tls_listener_serves_grpc_web_with_hsts(edge: Edge) -> None:
    ca_cert = edge.settings.edge_tls_cert.parent / "ca.crt"

    reply = grpc_web_call(
        edge.https_port,
        "grpc.health.v1.Health/Check",
        origin=ALLOWED_ORIGIN,
        tls=tls_client_context(ca_cert),
        host="localhost",  # the name the certificate is for
    )

    assert reply.grpc_status == 0
    hsts = reply.headers["strict-transport-security"]
    assert int(hsts.split(";")[0].removeprefix("max-age=")) >= 31536000
    assert "includesubdomains" in hsts.lower()
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_tls_listener_speaks_native_grpc(edge: Edge) -> None:
    ca_cert = (edge.settings.edge_tls_cert.parent / "ca.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_cert)
    with grpc.secure_channel(f"localhost:{edge.https_port}", credentials) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        reply = check(b"", timeout=10)

    assert reply == b"\x08\x01"  # HealthCheckResponse{status: SERVING}


def test_tls_certificate_is_not_trusted_without_its_ca(edge: Edge) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        grpc_web_call(
            edge.https_port,
            "grpc.health.v1.Health/Check",
            tls=ssl.create_default_context(),
            host="localhost",
        )
