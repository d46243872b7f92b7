"""Request ids and trace context in and out, Prometheus metrics, and logs without secrets."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.compute.v1 import compute_service_pb2 as compute_pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.resources import Resources
from tests.test_cli import _env, _gateway_process
from tests.utils.compute import free_port
from tests.utils.factories import bearer, make_user
from tests.utils.mailbox import Mailbox

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_ids_come_back_on_success_and_on_error(
    channel: grpc.aio.Channel, resources: Resources
) -> None:
    users = UserServiceStub(channel)
    me = bearer(resources.access_tokens, await make_user(resources.sessions))
    call = users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(),
        metadata=(*me, ("x-request-id", "req-123"), ("traceparent", TRACEPARENT)),
    )
    await call
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-request-id"] == "req-123"
    assert trailers["traceparent"].split("-")[1] == TRACE_ID  # same trace, our span

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.GetCurrentUser(
            user_service_pb2.GetCurrentUserRequest(), metadata=(("x-request-id", "req-456"),)
        )
    error_trailers = dict(caught.value.trailing_metadata() or ())
    assert error_trailers["x-request-id"] == "req-456"
    assert "grpc-status-details-bin" in error_trailers


async def test_a_missing_or_insane_request_id_is_replaced(
    channel: grpc.aio.Channel, resources: Resources
) -> None:
    users = UserServiceStub(channel)
    me = bearer(resources.access_tokens, await make_user(resources.sessions))
    for extra in ((), (("x-request-id", "x" * 500),)):
        call = users.GetCurrentUser(
            user_service_pb2.GetCurrentUserRequest(), metadata=(*me, *extra)
        )
        await call
        request_id = dict(await call.trailing_metadata())["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = line[len(name) + 1 : line.index("}")]
            if all(part in found.split(",") for part in wanted.split(",")):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_every_worker_and_logs_hold_no_secret(
    database_url: URL, compute_address: str, tmp_path: Path
) -> None:
    mailbox = Mailbox()
    mailbox.start()
    try:
        _run_observed_gateway(database_url, compute_address, tmp_path, mailbox)
    finally:
        mailbox.stop()


def _run_observed_gateway(
    database_url: URL, compute_address: str, tmp_path: Path, mailbox: Mailbox
) -> None:
    metrics_address = f"127.0.0.1:{free_port()}"
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_GATEWAY_ADDR="127.0.0.1:0",
        NUELL_WORKERS="2",
        NUELL_METRICS_ADDR=metrics_address,
        NUELL_COMPUTE_TARGET=compute_address,
        NUELL_LOG_LEVEL="DEBUG",
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
        NUELL_SMTP_URL=mailbox.url,
    )
    password, new_password = "Secret-Horse-Battery-9", "Other-Horse-Battery-9"
    email = f"observed-{free_port()}@example.com"
    log = (tmp_path / "gateway.log").open("w+")  # a file: a full pipe would stall DEBUG logging
    with _gateway_process(env, stderr=log) as (process, address):
        secrets_seen: list[str] = [password, new_password]
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        for round_ in range(8):  # several connections, so both workers serve some
            with grpc.insecure_channel(address, options=own_connection) as channel:
                auth, users = AuthServiceStub(channel), UserServiceStub(channel)
                if round_ == 0:
                    auth.Register(auth_pb.RegisterRequest(email=email, password=password))
                    (mail,) = mailbox.wait_for_sync(1)
                    link_token = mail.token("verify_email")
                    auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=link_token))
                login = auth.Login(auth_pb.LoginRequest(email=email, password=password))
                secrets_seen += [login.access_token, login.refresh_token]
                me = (("authorization", f"Bearer {login.access_token}"),)
                users.GetCurrentUser(user_service_pb2.GetCurrentUserRequest(), metadata=me)
                ComputeServiceStub(channel).Analyze(
                    compute_pb.AnalyzeRequest(text="metrics please"), metadata=me
                )
                with pytest.raises(grpc.RpcError):
                    auth.Login(auth_pb.LoginRequest(email=email, password="Wrong-" + password))
        with grpc.insecure_channel(address) as channel:
            AuthServiceStub(channel).ChangePassword(
                auth_pb.ChangePasswordRequest(current_password=password, new_password=new_password),
                metadata=(("authorization", f"Bearer {secrets_seen[2]}"),),
            )

        text = _scrape(metrics_address)
        requests = "nuell_gateway_rpc_requests_total"
        assert _sample(text, requests, method="/nuell.auth.v1.AuthService/Login", code="OK") == 8
        assert (
            _sample(
                text, requests, method="/nuell.auth.v1.AuthService/Login", code="UNAUTHENTICATED"
            )
            == 8
        )
        assert (
            _sample(text, requests, method="/nuell.compute.v1.ComputeService/Analyze", code="OK")
            == 8
        )
        assert (
            _sample(
                text,
                "nuell_gateway_rpc_duration_seconds_count",
                method="/nuell.users.v1.UserService/GetCurrentUser",
            )
            == 8
        )
        assert "nuell_gateway_db_pool_connections" in text
        assert _sample(text, "nuell_gateway_mail_sent_total", kind="verify_email") == 1
        assert "nuell_gateway_mail_outbox_depth" in text

        process.terminate()
        process.wait(timeout=15)
    log.seek(0)
    stderr = log.read()
    log.close()
    assert stderr.strip(), "the gateway logged nothing at DEBUG"
    for secret in [*secrets_seen, link_token]:
        assert secret not in stderr
    assert "$argon2" not in stderr
    assert email not in stderr
