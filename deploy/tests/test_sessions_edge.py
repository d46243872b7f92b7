"""Sessions and per-account throttling through a running Envoy in front of the
real gateway: the client address a session and the audit trail record is the
one the edge saw, never a header the client wrote; and a guesser spread over
many addresses is slowed per account, whatever address each guess comes from."""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.sessions.v1 import session_service_pb2 as sessions_pb
from nuell.sessions.v1.session_service_pb2_grpc import SessionServiceStub
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from deploy import stack
from deploy.dev_tls import DevCertificate
from deploy.launcher import Launcher
from deploy.settings import Address
from deploy.tests.support import (
    ALLOWED_ORIGIN,
    Backend,
    Edge,
    Reply,
    backend_settings,
    base_env,
    edge_settings,
    grpc_web_call,
    mark_verified,
    start_envoy,
)

OK, UNAUTHENTICATED, RESOURCE_EXHAUSTED = 0, 16, 8
PASSWORD = "Edge-Session-Pass-7!"


def call(edge: Edge, method: str, request: Message, *, source: str, **headers: str) -> Reply:
    return grpc_web_call(
        edge.http_port,
        method,
        request.SerializeToString(),
        origin=ALLOWED_ORIGIN,
        host=source,
        source=source,
        headers=headers,
    )


def account(edge: Edge, backend: Backend) -> str:
    email = f"edge-{uuid.uuid4().hex[:12]}@example.com"
    registered = call(
        edge,
        "nuell.auth.v1.AuthService/Register",
        auth_pb.RegisterRequest(email=email, password=PASSWORD),
        source="127.0.0.1",
    )
    assert registered.grpc_status == OK, registered.grpc_message
    mark_verified(backend.database_url, email)
    return email


def status_details(reply: Reply) -> status_pb2.Status:
    raw = reply.headers.get("grpc-status-details-bin") or reply.trailers["grpc-status-details-bin"]
    return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))


def test_a_session_records_the_address_the_edge_saw_not_a_forged_one(
    edge: Edge, backend: Backend
) -> None:
    email = account(edge, backend)
    source = "127.0.0.77"
    forged = {"x-nuell-client-address": "203.0.113.9", "x-forwarded-for": "198.51.100.1"}
    login = call(
        edge,
        "nuell.auth.v1.AuthService/Login",
        auth_pb.LoginRequest(email=email, password=PASSWORD),
        source=source,
        **forged,
        **{"user-agent": "NuellEdgeTest/1.0 (ja-JP)"},
    )
    assert login.grpc_status == OK, login.grpc_message
    token = auth_pb.LoginResponse.FromString(login.messages[0]).access_token
    listed = call(
        edge,
        "nuell.sessions.v1.SessionService/ListSessions",
        sessions_pb.ListSessionsRequest(),
        source=source,
        authorization=f"Bearer {token}",
    )
    assert listed.grpc_status == OK, listed.grpc_message
    (session,) = sessions_pb.ListSessionsResponse.FromString(listed.messages[0]).sessions
    assert session.ip_address == source  # the edge's own view; the forged headers are ignored
    assert session.user_agent.startswith("NuellEdgeTest/1.0 (ja-JP)")
    assert session.current


@pytest.fixture(scope="module")
def edge_behind_a_proxy(
    backend: Backend,
    dev_certificate: DevCertificate,
    module_processes: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Edge:
    """An edge trusting one proxy hop (a load balancer's X-Forwarded-For), with
    buckets large enough that only the per-account limit can trip."""
    environ = {
        "NUELL_CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "NUELL_EDGE_TRUSTED_PROXY_HOPS": "1",
        "NUELL_EDGE_AUTH_RATE_PER_MINUTE": "1200",
        "NUELL_EDGE_AUTH_BURST": "1000",
    }
    settings = edge_settings(backend, dev_certificate, environ)
    return start_envoy(module_processes, settings, tmp_path_factory.mktemp("hop"), "hop-envoy")


def test_guesses_from_many_addresses_are_slowed_per_account(
    edge_behind_a_proxy: Edge, backend: Backend
) -> None:
    edge = edge_behind_a_proxy
    email = account(edge, backend)
    guessers = [f"198.51.100.{n}" for n in range(1, 7)]
    codes = []
    for address in guessers:
        reply = call(
            edge,
            "nuell.auth.v1.AuthService/Login",
            auth_pb.LoginRequest(email=email, password="Wrong-Guess-Pass-1"),
            source="127.0.0.1",
            **{"x-forwarded-for": address},
        )
        codes.append(reply.grpc_status)
    # Five different addresses, five failures: the sixth address is refused.
    assert codes == [UNAUTHENTICATED] * 5 + [RESOURCE_EXHAUSTED], codes
    details = status_details(reply)
    infos = {d.TypeName(): d for d in details.details}
    error_info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    infos["google.rpc.ErrorInfo"].Unpack(error_info)
    infos["google.rpc.RetryInfo"].Unpack(retry)
    assert error_info.reason == "TOO_MANY_ATTEMPTS"
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    # The audit trail names each guesser by the address the edge resolved.
    with psycopg.connect(backend.database_url, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT e.type, e.ip_address FROM auth_events e JOIN users u ON u.id = e.user_id "
            "WHERE lower(u.email) = lower(%s) ORDER BY e.id",
            (email,),
        ).fetchall()
    assert [ip for kind, ip in rows if kind == "sign_in_failed"] == guessers[:5]
    assert rows[-1] == ("sign_in_throttled", guessers[5])


def test_a_session_ended_on_one_gateway_process_is_refused_by_another_within_a_second(
    edge: Edge, backend: Backend, processes: Launcher
) -> None:
    """Two gateway processes on one database: the second learns of the end by NOTIFY."""
    settings = dataclasses.replace(
        backend_settings(),
        compute=Address.parse(backend.compute, variable="compute", allow_port_zero=False),
    )
    env = base_env() | {"NUELL_WORKERS": "1"}
    processes.start(stack.gateway_service(settings, env, backend.database_url))
    email = account(edge, backend)
    with (
        grpc.insecure_channel(backend.gateway) as first,
        grpc.insecure_channel(settings.gateway.connect_target) as second,
    ):
        login = AuthServiceStub(first).Login(auth_pb.LoginRequest(email=email, password=PASSWORD))
        bearer = (("authorization", f"Bearer {login.access_token}"),)
        me = UserServiceStub(second).GetCurrentUser
        me(users_pb.GetCurrentUserRequest(), metadata=bearer)  # the second process caches it
        sessions = SessionServiceStub(first)
        (session,) = sessions.ListSessions(
            sessions_pb.ListSessionsRequest(), metadata=bearer
        ).sessions
        sessions.RevokeSession(sessions_pb.RevokeSessionRequest(id=session.id), metadata=bearer)
        ended = time.monotonic()
        while (code := _code_of(me, bearer)) == grpc.StatusCode.OK:
            assert time.monotonic() - ended < 1.0, "the second process still accepts the token"
            time.sleep(0.02)
        assert code == grpc.StatusCode.UNAUTHENTICATED


def _code_of(call: Any, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        call(users_pb.GetCurrentUserRequest(), metadata=metadata)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
