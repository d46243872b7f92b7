"""Accounts over email through the real stack: Envoy, the gateway, PostgreSQL and
MailDev (the session's own, `backend.mailbox`). Every token comes from a mail
read over MailDev's REST API (`/api/email`), in English and in Japanese."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from deploy import stack
from deploy.settings import SettingsError, StackSettings
from deploy.tests.support import Backend, Edge, mails_to, wait_for, wait_for_link

PASSWORD = "Correct-Horse-42"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def auth(edge: Edge) -> Iterator[AuthServiceStub]:
    with grpc.insecure_channel(edge.target) as channel:
        yield AuthServiceStub(channel)


@pytest.fixture(scope="module")
def users(edge: Edge) -> Iterator[UserServiceStub]:
    with grpc.insecure_channel(edge.target) as channel:
        yield UserServiceStub(channel)


def fresh_email(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}@example.com"


def refusal(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    """What a refused call says: its code, ErrorInfo.reason and the fields it names."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error = raised.value
    reason, fields = "", []
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return error.code(), reason, fields


def database_state(database_url: str) -> tuple[Any, ...]:
    """Everything a request about accounts can change, to compare before and after."""
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        return tuple(
            connection.execute(query).fetchall()
            for query in (
                "SELECT * FROM users ORDER BY id",
                "SELECT * FROM one_time_tokens ORDER BY 1",
                "SELECT count(*) FROM mail_outbox",
            )
        )


def register_and_verify(
    auth: AuthServiceStub, backend: Backend, email: str, locale: str = "en"
) -> dict[str, Any]:
    """Register through the edge, verify by the mailed link; the verification mail."""
    auth.Register(auth_pb.RegisterRequest(email=email, password=PASSWORD, locale=locale))
    mail, page, token = wait_for_link(backend.mailbox, email, "verify_email")
    assert page.startswith("http"), page
    auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))
    return mail


def log_in(auth: AuthServiceStub, email: str, password: str = PASSWORD) -> auth_pb.LoginResponse:
    return auth.Login(auth_pb.LoginRequest(email=email, password=password))


def test_register_read_the_mail_verify_then_log_in(
    auth: AuthServiceStub, users: UserServiceStub, backend: Backend
) -> None:
    email = fresh_email("mail")
    reply = auth.Register(auth_pb.RegisterRequest(email=email, password=PASSWORD))
    assert not reply.HasField("user")  # alike for new and taken addresses

    # Before verification the right password says why; a wrong one says what it always did.
    code, reason, _ = refusal(lambda: log_in(auth, email))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_NOT_VERIFIED")
    code, reason, _ = refusal(lambda: log_in(auth, email, "Wrong-Horse-42"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert reason != "EMAIL_NOT_VERIFIED"

    mail, page, token = wait_for_link(backend.mailbox, email, "verify_email")
    assert page == "http://localhost:3000"  # NUELL_PUBLIC_URL: the page, by default
    assert len(token) >= 22  # at least 128 random bits, URL-safe
    assert token in mail["html"]
    auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))

    login = log_in(auth, email)
    bearer = (("authorization", f"Bearer {login.access_token}"),)
    me = users.GetCurrentUser(users_pb.GetCurrentUserRequest(), metadata=bearer).user
    assert (me.email, me.email_verified, me.locale) == (email, True, "en")
    # Used once: the same link again is refused like any unknown token.
    code, reason, fields = refusal(
        lambda: auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token))
    )
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "TOKEN_INVALID", ["token"])


def test_japanese_mails_are_decoded(auth: AuthServiceStub, backend: Backend) -> None:
    email = fresh_email("ja")
    mail = register_and_verify(auth, backend, email, locale="ja")

    assert JAPANESE.search(mail["subject"]), mail["subject"]
    assert "=?" not in mail["subject"]  # decoded, not an encoded word
    assert JAPANESE.search(mail["text"])
    assert JAPANESE.search(mail["html"])
    assert log_in(auth, email).access_token


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_password_reset_by_mail(auth: AuthServiceStub, backend: Backend, locale: str) -> None:
    email = fresh_email(f"reset-{locale}")
    register_and_verify(auth, backend, email, locale)
    old_session = log_in(auth, email)
    seen = len(mails_to(backend.mailbox, email))

    auth.RequestPasswordReset(auth_pb.RequestPasswordResetRequest(email=email))
    mail, _, token = wait_for_link(backend.mailbox, email, "reset_password", seen=seen)
    assert bool(JAPANESE.search(mail["subject"])) == (locale == "ja"), mail["subject"]

    # The password rules as at Register, every broken one at once; nothing changes.
    before = database_state(backend.database_url)
    weak = auth_pb.ResetPasswordRequest(token=token, new_password="short")
    code, reason, fields = refusal(lambda: auth.ResetPassword(weak))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fields) >= 3, fields
    assert set(fields) == {"new_password"}
    assert database_state(backend.database_url) == before

    new_password = "Neue-Passwort-パス-58"
    auth.ResetPassword(auth_pb.ResetPasswordRequest(token=token, new_password=new_password))
    assert log_in(auth, email, new_password).access_token
    code, _, _ = refusal(lambda: log_in(auth, email))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # Every session of the account ended with the reset.
    refresh = auth_pb.RefreshRequest(refresh_token=old_session.refresh_token)
    code, _, _ = refusal(lambda: auth.Refresh(refresh))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    again = auth_pb.ResetPasswordRequest(token=token, new_password=f"{new_password}-2")
    code, reason, _ = refusal(lambda: auth.ResetPassword(again))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "TOKEN_INVALID")


def test_email_change_by_mail(
    auth: AuthServiceStub, users: UserServiceStub, backend: Backend
) -> None:
    email, moved = fresh_email("old"), fresh_email("new")
    register_and_verify(auth, backend, email)
    bearer = (("authorization", f"Bearer {log_in(auth, email).access_token}"),)
    seen = len(mails_to(backend.mailbox, email))

    request = auth_pb.RequestEmailChangeRequest(new_email=moved, current_password=PASSWORD)
    auth.RequestEmailChange(request, metadata=bearer)
    _, _, token = wait_for_link(backend.mailbox, moved, "confirm_email")
    auth.ConfirmEmailChange(auth_pb.ConfirmEmailChangeRequest(token=token))

    # The old address was told, without a link that could change anything.
    notices = wait_for(
        lambda: mails_to(backend.mailbox, email)[seen:], timeout=30, what="the notice"
    )
    assert all("confirm_email=" not in notice["text"] for notice in notices)
    login = log_in(auth, moved)
    me = users.GetCurrentUser(
        users_pb.GetCurrentUserRequest(),
        metadata=(("authorization", f"Bearer {login.access_token}"),),
    ).user
    assert (me.email, me.email_verified) == (moved, True)
    code, _, _ = refusal(lambda: log_in(auth, email))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_registering_a_taken_address_answers_alike_and_tells_its_owner(
    auth: AuthServiceStub, backend: Backend
) -> None:
    email = fresh_email("taken")
    register_and_verify(auth, backend, email)
    seen = len(mails_to(backend.mailbox, email))

    reply = auth.Register(auth_pb.RegisterRequest(email=email, password="Another-Horse-43"))

    assert reply == auth_pb.RegisterResponse()
    # The owner hears of it, with a way to reset the password; the password stays.
    wait_for_link(backend.mailbox, email, "reset_password", seen=seen)
    assert log_in(auth, email).access_token


@pytest.mark.parametrize(
    "call",
    [
        lambda auth, token: auth.VerifyEmail(auth_pb.VerifyEmailRequest(token=token)),
        lambda auth, token: auth.ResetPassword(
            auth_pb.ResetPasswordRequest(token=token, new_password="Neue-Passwort-パス-58")
        ),
        lambda auth, token: auth.ConfirmEmailChange(auth_pb.ConfirmEmailChangeRequest(token=token)),
    ],
    ids=["verify", "reset", "confirm"],
)
def test_unknown_tokens_are_refused_and_change_nothing(
    auth: AuthServiceStub, backend: Backend, call: Any
) -> None:
    before = database_state(backend.database_url)

    code, reason, fields = refusal(lambda: call(auth, f"unknown-{uuid.uuid4().hex}"))

    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "TOKEN_INVALID", ["token"])
    assert database_state(backend.database_url) == before


# --- MailDev in the stack's declaration ------------------------------------------------


def test_the_stack_runs_maildev_and_points_the_gateway_at_it() -> None:
    settings = StackSettings.from_env({"NUELL_MAIL_SMTP_PORT": "2025", "NUELL_WEB_PORT": "3001"})

    declared = {service.name: service for service in stack.services(settings, env={})}

    assert "--smtp" in declared["maildev"].argv
    assert ("MailDev SMTP", "NUELL_MAIL_SMTP_PORT", settings.mail_smtp) in declared["maildev"].binds
    gateway_env = declared["py_gateway"].env or {}
    assert gateway_env["NUELL_SMTP_URL"] == "smtp://127.0.0.1:2025"
    assert gateway_env["NUELL_PUBLIC_URL"] == "http://localhost:3001"


def test_a_mail_server_of_the_users_own_replaces_maildev() -> None:
    env = {"NUELL_SMTP_URL": "smtps://user:pass@mail.example.com:465"}
    env |= {"NUELL_PUBLIC_URL": "https://nue-japan.com"}

    declared = {service.name: service for service in stack.services(StackSettings(), env=env)}

    assert "maildev" not in declared
    assert declared["py_gateway"].env is not None
    assert {k: declared["py_gateway"].env[k] for k in env} == env


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"NUELL_MAIL_WEB_PORT": "inbox"}, "NUELL_MAIL_WEB_PORT"),
        ({"NUELL_MAIL_SMTP_PORT": "0"}, "NUELL_MAIL_SMTP_PORT"),
        ({"NUELL_MAIL_SMTP_PORT": "3000"}, "NUELL_MAIL_SMTP_PORT"),  # the page's port
    ],
)
def test_bad_maildev_ports_are_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        StackSettings.from_env(environ)
