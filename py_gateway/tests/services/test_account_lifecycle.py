"""Accounts over email, end to end: every mail read from a real SMTP server.

The gateway runs in this process against the real PostgreSQL and delivers
to an aiosmtpd server (tests/utils/mailbox.py); links and their tokens are
taken from the received mails, as a user would. Throttling is off here
(`mail_throttle_seconds=0`, a high hourly limit) except where it is tested.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import grpc
import pytest
import trustme
from google.protobuf.message import Message
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy import select, update
from sqlalchemy.engine import URL

from nuell_gateway.db.models import MailOutbox, OneTimeToken, User
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.factories import make_user
from tests.utils.mailbox import Mailbox
from tests.utils.rpc import ErrorDetails, error_details
from tests.utils.samples import STRONG_PASSWORD
from tests.utils.snapshot import SECURITY_RECORDS, snapshot

NEW_PASSWORD = "Brand-New-Horse-77"
PUBLIC_URL = "https://nuell.example"
SUBJECTS = {
    ("verify_email", "en"): "Confirm your email address",
    ("verify_email", "ja"): "メールアドレスの確認",
    ("reset_password", "en"): "Reset your password",
    ("reset_password", "ja"): "パスワードの再設定",
    ("change_email", "ja"): "新しいメールアドレスの確認",
    ("email_change_notice", "ja"): "メールアドレス変更のお知らせ",
    ("registration_attempt", "en"): "Someone tried to register with your email address",
}


def _settings(database_url: URL, mailbox: Mailbox, **overrides: object) -> dict[str, object]:
    return {
        "smtp_url": mailbox.url,
        "public_url": PUBLIC_URL,
        "mail_from": "Nuell <no-reply@nuell.example>",
        "mail_retry_seconds": 0.2,
        "mail_throttle_seconds": 0,
        "mail_throttle_per_hour": 1000,
        **overrides,
    }


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture
async def gateway(
    database_url: URL, empty_tables: None, mailbox: Mailbox
) -> AsyncIterator[Gateway]:
    running = await Gateway.start(make_settings(database_url, **_settings(database_url, mailbox)))
    yield running
    await running.stop()


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _error(call: object) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return error_details(caught.value)


def _same(details: ErrorDetails) -> tuple[object, ...]:
    return (details.code, details.message, details.error_info, details.violations)


async def _login(auth: AuthServiceStub, email: str, password: str) -> pb.LoginResponse:
    reply: pb.LoginResponse = await auth.Login(pb.LoginRequest(email=email, password=password))
    return reply


async def _interleaved_median_ratio(
    first: Callable[[int], Awaitable[Message]],
    second: Callable[[int], Awaitable[Message]],
    *,
    tries: int,
) -> float:
    """Median time of `first` over `second`, called by turns (so drift affects both alike).

    Their replies must be equal on every turn.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(tries):
        replies = []
        for call, spent in zip((first, second), times, strict=True):
            started = time.perf_counter()
            replies.append(await call(i))
            spent.append(time.perf_counter() - started)
        assert replies[0] == replies[1]
    return statistics.median(times[0]) / statistics.median(times[1])


# ------------------------------------------------------------- verification


@pytest.mark.parametrize("locale", ["en", "ja"])
async def test_register_verify_and_sign_in_from_the_mail(
    auth: AuthServiceStub, users: UserServiceStub, mailbox: Mailbox, locale: str
) -> None:
    email = f"kenji.{locale}@example.jp"
    await auth.Register(pb.RegisterRequest(email=email, password=STRONG_PASSWORD, locale=locale))
    refused = await _error(_login(auth, email, STRONG_PASSWORD))
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.error_info is not None
    assert refused.error_info.reason == "EMAIL_NOT_VERIFIED"

    (mail,) = await mailbox.wait_for(1)
    assert mail.envelope_to == [email]
    assert mail.subject == SUBJECTS[("verify_email", locale)]
    assert mail.message["From"] == "Nuell <no-reply@nuell.example>"
    assert mail.message["Message-ID"].endswith("@nuell.example>")
    assert email in mail.text
    assert f"{PUBLIC_URL}/?verify_email=" in mail.text
    if locale == "ja":
        assert "24 時間以内" in mail.text
        assert "メールアドレスを確認する" in mail.html
    token = mail.token("verify_email")
    assert len(token) >= 43  # 256 bits, base64url

    await auth.VerifyEmail(pb.VerifyEmailRequest(token=token))
    tokens = await _login(auth, email, STRONG_PASSWORD)
    me = await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(tokens.access_token)
    )
    assert me.user.email_verified
    assert me.user.locale == locale
    again = await _error(auth.VerifyEmail(pb.VerifyEmailRequest(token=token)))
    assert again.error_info is not None
    assert again.error_info.reason == "TOKEN_INVALID"


async def test_register_defaults_to_the_configured_locale(
    database_url: URL, empty_tables: None, mailbox: Mailbox
) -> None:
    settings = make_settings(database_url, **_settings(database_url, mailbox, default_locale="ja"))
    running = await Gateway.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await AuthServiceStub(channel).Register(
                pb.RegisterRequest(email="yuki@example.jp", password=STRONG_PASSWORD)
            )
        (mail,) = await mailbox.wait_for(1)
        assert mail.subject == SUBJECTS[("verify_email", "ja")]
    finally:
        await running.stop()


async def test_a_wrong_password_on_an_unverified_account_answers_as_for_any(
    auth: AuthServiceStub, resources: Resources
) -> None:
    unverified = await make_user(resources.sessions, email_verified=False)
    wrong = await _error(_login(auth, unverified.email, "Wrong-Password-1"))
    unknown = await _error(_login(auth, "nobody@example.com", "Wrong-Password-1"))
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    assert _same(wrong) == _same(unknown)


async def test_unverified_accounts_sign_in_when_verification_is_not_required(
    database_url: URL, empty_tables: None, mailbox: Mailbox
) -> None:
    settings = make_settings(
        database_url, **_settings(database_url, mailbox, require_email_verification=False)
    )
    running = await Gateway.start(settings)
    try:
        unverified = await make_user(running.resources.sessions, email_verified=False)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await _login(AuthServiceStub(channel), unverified.email, STRONG_PASSWORD)
        assert reply.access_token
    finally:
        await running.stop()


async def test_resend_verification_supersedes_the_first_link(
    auth: AuthServiceStub, mailbox: Mailbox
) -> None:
    await auth.Register(pb.RegisterRequest(email="ada@example.com", password=STRONG_PASSWORD))
    await auth.ResendVerification(pb.ResendVerificationRequest(email="ADA@example.com"))
    first, second = await mailbox.wait_for(2)
    superseded = await _error(
        auth.VerifyEmail(pb.VerifyEmailRequest(token=first.token("verify_email")))
    )
    assert superseded.error_info is not None
    assert superseded.error_info.reason == "TOKEN_INVALID"
    await auth.VerifyEmail(pb.VerifyEmailRequest(token=second.token("verify_email")))
    # Verified now: a resend sends nothing, and answers the same.
    await auth.ResendVerification(pb.ResendVerificationRequest(email="ada@example.com"))
    await asyncio.sleep(1.5)
    assert len(mailbox.received) == 2


# ----------------------------------------------------------- password reset


async def test_reset_password_from_the_mail_ends_every_session(
    auth: AuthServiceStub, users: UserServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions, locale="ja")
    before = await _login(auth, user.email, STRONG_PASSWORD)
    await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(before.access_token)
    )
    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email.upper()))
    (mail,) = await mailbox.wait_for(1)
    assert mail.subject == SUBJECTS[("reset_password", "ja")]
    assert "30 分以内" in mail.text
    token = mail.token("reset_password")

    # A bad new password is refused with every rule, and spends nothing.
    weak = await _error(
        auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="short"))
    )
    assert weak.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in weak.violations if v.field == "new_password"} == {
        "string.min_len",
        "password.uppercase",
        "password.digit",
        "password.symbol",
    }

    await auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD))
    cut = await _error(
        users.GetCurrentUser(
            user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(before.access_token)
        )
    )
    assert cut.code == grpc.StatusCode.UNAUTHENTICATED
    refused = await _error(auth.Refresh(pb.RefreshRequest(refresh_token=before.refresh_token)))
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert (await _error(_login(auth, user.email, STRONG_PASSWORD))).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    after = await _login(auth, user.email, NEW_PASSWORD)
    await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(after.access_token)
    )


async def test_two_concurrent_uses_of_one_token_let_exactly_one_win(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions)
    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    (mail,) = await mailbox.wait_for(1)
    token = mail.token("reset_password")
    outcomes = await asyncio.gather(
        *(
            auth.ResetPassword(
                pb.ResetPasswordRequest(token=token, new_password=f"{NEW_PASSWORD}{i}")
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    won = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, BaseException)]
    assert len(won) == 1
    for outcome in outcomes:
        if isinstance(outcome, grpc.aio.AioRpcError):
            assert error_details(outcome).error_info.reason == "TOKEN_INVALID"  # type: ignore[union-attr]
    await _login(auth, user.email, f"{NEW_PASSWORD}{won[0]}")


async def test_request_password_reset_answers_alike_and_in_the_same_time(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    known = await make_user(resources.sessions)

    ratio = await _interleaved_median_ratio(
        lambda i: auth.RequestPasswordReset(
            pb.RequestPasswordResetRequest(email=f"nobody-{i}@example.com")
        ),
        lambda i: auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=known.email)),
        tries=12,
    )
    assert 0.8 <= ratio <= 1.25, ratio
    await mailbox.wait_for(12)
    assert {tuple(m.envelope_to) for m in mailbox.received} == {(known.email,)}


async def test_a_deactivated_account_gets_no_reset_mail(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    inactive = await make_user(resources.sessions, is_active=False)
    before = await snapshot(resources.sessions)
    reply = await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=inactive.email))
    assert reply == pb.RequestPasswordResetResponse()
    await asyncio.sleep(1.5)
    assert mailbox.received == []
    assert await snapshot(resources.sessions) == before


# -------------------------------------------------------------- email change


async def test_change_email_confirms_the_new_address_and_tells_the_old(
    auth: AuthServiceStub, users: UserServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions, locale="ja")
    tokens = await _login(auth, user.email, STRONG_PASSWORD)
    wrong = await _error(
        auth.RequestEmailChange(
            pb.RequestEmailChangeRequest(
                new_email="new@example.jp", current_password="Wrong-1-pass"
            ),
            metadata=_bearer(tokens.access_token),
        )
    )
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    await auth.RequestEmailChange(
        pb.RequestEmailChangeRequest(new_email="New@Example.JP", current_password=STRONG_PASSWORD),
        metadata=_bearer(tokens.access_token),
    )
    await mailbox.wait_for(2)
    (confirmation,) = mailbox.to("New@example.jp")
    (notice,) = mailbox.to(user.email)
    assert confirmation.subject == SUBJECTS[("change_email", "ja")]
    assert notice.subject == SUBJECTS[("email_change_notice", "ja")]
    assert "?" not in notice.text  # a notice carries no link

    await auth.ConfirmEmailChange(
        pb.ConfirmEmailChangeRequest(token=confirmation.token("confirm_email"))
    )
    cut = await _error(
        users.GetCurrentUser(
            user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(tokens.access_token)
        )
    )
    assert cut.code == grpc.StatusCode.UNAUTHENTICATED
    after = await _login(auth, "new@example.jp", STRONG_PASSWORD)
    me = await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(after.access_token)
    )
    assert (me.user.email, me.user.email_verified) == ("New@example.jp", True)
    assert (await _error(_login(auth, user.email, STRONG_PASSWORD))).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_refused_email_changes_change_nothing_and_mail_nothing(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions, email="Same@example.com")
    tokens = await _login(auth, user.email, STRONG_PASSWORD)
    # The wrong password is counted and recorded (the throttle, the audit trail).
    before = await snapshot(resources.sessions, ignoring=SECURITY_RECORDS)
    refusals = {
        "wrong password": pb.RequestEmailChangeRequest(
            new_email="other@example.com", current_password="Wrong-Horse-42"
        ),
        "same address in another case": pb.RequestEmailChangeRequest(
            new_email="same@EXAMPLE.com", current_password=STRONG_PASSWORD
        ),
        "not an address": pb.RequestEmailChangeRequest(
            new_email="メール@", current_password=STRONG_PASSWORD
        ),
    }
    answers = {
        name: await _error(auth.RequestEmailChange(request, metadata=_bearer(tokens.access_token)))
        for name, request in refusals.items()
    }
    assert answers["wrong password"].code == grpc.StatusCode.UNAUTHENTICATED
    unchanged = answers["same address in another case"]
    assert unchanged.error_info is not None
    assert (unchanged.code, unchanged.error_info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "EMAIL_UNCHANGED",
    )
    assert [v.field for v in unchanged.violations] == ["new_email"]
    assert {v.field for v in answers["not an address"].violations} == {"new_email"}
    await asyncio.sleep(1.2)
    assert mailbox.received == []
    assert await snapshot(resources.sessions, ignoring=SECURITY_RECORDS) == before


async def test_change_to_a_taken_address_answers_alike_and_mails_it_nothing(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions)
    other = await make_user(resources.sessions)
    tokens = await _login(auth, user.email, STRONG_PASSWORD)
    reply = await auth.RequestEmailChange(
        pb.RequestEmailChangeRequest(new_email=other.email, current_password=STRONG_PASSWORD),
        metadata=_bearer(tokens.access_token),
    )
    assert reply == pb.RequestEmailChangeResponse()
    await mailbox.wait_for(1)
    await asyncio.sleep(1.0)
    assert [m.envelope_to for m in mailbox.received] == [[user.email]]


# ---------------------------------------------------------------- bad tokens


async def test_every_bad_token_answers_alike_and_changes_nothing(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    user = await make_user(resources.sessions)
    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    used = (await mailbox.wait_for(1))[0].token("reset_password")
    await auth.ResetPassword(pb.ResetPasswordRequest(token=used, new_password=NEW_PASSWORD))

    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    superseded = (await mailbox.wait_for(2))[1].token("reset_password")
    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
    expired = (await mailbox.wait_for(3))[2].token("reset_password")
    async with resources.sessions.begin() as session:
        await session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.used_at.is_(None), OneTimeToken.superseded_at.is_(None))
            .values(
                created_at=datetime.now(UTC) - timedelta(hours=2),
                expires_at=datetime.now(UTC) - timedelta(hours=1),
            )
        )
    # Live, but for another purpose.
    await make_user(resources.sessions, email="fresh@example.com", email_verified=False)
    await auth.ResendVerification(pb.ResendVerificationRequest(email="fresh@example.com"))
    other_purpose = (await mailbox.wait_for(4))[3].token("verify_email")
    # Live, but its account was deactivated since.
    victim = await make_user(resources.sessions)
    await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=victim.email))
    deactivated = (await mailbox.wait_for(5))[4].token("reset_password")
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == victim.id).values(is_active=False))

    before = await snapshot(resources.sessions)
    answers = []
    for token in [used, superseded, expired, other_purpose, deactivated, "A" * 43, "x"]:
        for call in (
            auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="Yet-Another-99")),
            auth.ConfirmEmailChange(pb.ConfirmEmailChangeRequest(token=token)),
        ):
            answers.append(_same(await _error(call)))
    for verify_token in [used, superseded, expired, deactivated, "A" * 43]:
        answers.append(
            _same(await _error(auth.VerifyEmail(pb.VerifyEmailRequest(token=verify_token))))
        )
    assert len(set(map(repr, answers))) == 1, answers[0]
    code, _, info, violations = answers[0]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "TOKEN_INVALID"  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["token"]  # type: ignore[attr-defined]
    assert await snapshot(resources.sessions) == before


async def test_malformed_tokens_are_refused_by_the_contract(auth: AuthServiceStub) -> None:
    for token in ["", "has space", "a/b", "ü" * 10, "a" * 257]:
        refused = await _error(auth.VerifyEmail(pb.VerifyEmailRequest(token=token)))
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in refused.violations} == {"token"}


# ---------------------------------------------------- register, enumeration


async def test_register_answers_alike_for_a_taken_address_and_mails_its_owner(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    owner = await make_user(resources.sessions)

    ratio = await _interleaved_median_ratio(
        lambda i: auth.Register(
            pb.RegisterRequest(email=f"new-{i}@example.com", password=STRONG_PASSWORD)
        ),
        lambda i: auth.Register(pb.RegisterRequest(email=owner.email, password=STRONG_PASSWORD)),
        tries=8,
    )
    assert 0.8 <= ratio <= 1.25, ratio

    await mailbox.wait_for(16)
    to_owner = mailbox.to(owner.email)
    assert len(to_owner) == 8
    assert to_owner[-1].subject == SUBJECTS[("registration_attempt", "en")]
    await auth.ResetPassword(
        pb.ResetPasswordRequest(
            token=to_owner[-1].token("reset_password"), new_password=NEW_PASSWORD
        )
    )
    await _login(auth, owner.email, NEW_PASSWORD)


# ------------------------------------------------------------- the mail path


async def test_mails_wait_while_smtp_is_down_and_arrive_exactly_once(
    auth: AuthServiceStub, resources: Resources, mailbox: Mailbox
) -> None:
    mailbox.stop()
    for i in range(5):
        await auth.Register(
            pb.RegisterRequest(email=f"down-{i}@example.com", password=STRONG_PASSWORD)
        )
    await asyncio.sleep(1.5)  # several failed attempts
    async with resources.sessions() as session:
        attempts = list((await session.execute(select(MailOutbox.attempts))).scalars())
    assert len(attempts) == 5
    assert min(attempts) >= 1
    mailbox.start()
    await mailbox.wait_for(5, seconds=20)
    await asyncio.sleep(2.0)  # nothing more comes
    received = mailbox.received
    assert sorted(r.envelope_to[0] for r in received) == [f"down-{i}@example.com" for i in range(5)]
    assert len({r.message["Message-ID"] for r in received}) == 5
    async with resources.sessions() as session:
        rows = (await session.execute(select(MailOutbox))).scalars().all()
    assert {(row.status, row.body_text, row.body_html) for row in rows} == {("sent", "", "")}


async def test_a_mail_is_given_up_after_the_last_attempt(
    database_url: URL, empty_tables: None, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox.stop()
    settings = make_settings(
        database_url,
        **_settings(database_url, mailbox, mail_max_attempts=2, mail_retry_seconds=0.1),
    )
    running = await Gateway.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await AuthServiceStub(channel).Register(
                pb.RegisterRequest(email="lost@example.com", password=STRONG_PASSWORD)
            )
        async with asyncio.timeout(10):
            while True:
                async with running.resources.sessions() as session:
                    row = (await session.execute(select(MailOutbox))).scalar_one()
                if row.status == "failed":
                    break
                await asyncio.sleep(0.1)
        assert (row.attempts, row.body_text, row.body_html) == (2, "", "")
        failed = [r for r in caplog.records if r.getMessage() == "mail failed for good"]
        assert len(failed) == 1
        assert "lost@example.com" not in str(failed[0].__dict__)
    finally:
        await running.stop()


async def test_a_refused_mail_does_not_hold_up_the_others(
    database_url: URL, empty_tables: None, mailbox: Mailbox
) -> None:
    mailbox.refuse("refused@example.com")
    settings = make_settings(
        database_url,
        **_settings(database_url, mailbox, mail_max_attempts=3, mail_retry_seconds=0.1),
    )
    running = await Gateway.start(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            auth = AuthServiceStub(channel)
            for email in ("refused@example.com", "fine@example.com"):
                await auth.Register(pb.RegisterRequest(email=email, password=STRONG_PASSWORD))
        async with asyncio.timeout(10):
            while True:
                async with running.resources.sessions() as session:
                    rows = {
                        row.recipient: (row.status, row.attempts)
                        for row in (await session.execute(select(MailOutbox))).scalars()
                    }
                if rows["refused@example.com"][0] == "failed":
                    break
                await asyncio.sleep(0.1)
        assert rows == {"refused@example.com": ("failed", 3), "fine@example.com": ("sent", 1)}
        assert [m.envelope_to for m in mailbox.received] == [["fine@example.com"]]
    finally:
        await running.stop()


async def test_throttling_answers_as_usual_and_sends_nothing_more(
    database_url: URL, empty_tables: None, mailbox: Mailbox
) -> None:
    settings = make_settings(
        database_url,
        **_settings(database_url, mailbox, mail_throttle_seconds=60, mail_throttle_per_hour=5),
    )
    running = await Gateway.start(settings)
    try:
        user = await make_user(running.resources.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            auth = AuthServiceStub(channel)
            replies = [
                await auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=user.email))
                for _ in range(3)
            ]
        assert replies == [pb.RequestPasswordResetResponse()] * 3
        await mailbox.wait_for(1)
        await asyncio.sleep(1.5)
        assert len(mailbox.received) == 1
        async with running.resources.sessions() as session:
            tokens = (await session.execute(select(OneTimeToken))).scalars().all()
        assert len(tokens) == 1  # a throttled request makes no token either
    finally:
        await running.stop()


async def test_without_an_smtp_server_mails_wait_in_the_outbox(
    database_url: URL, empty_tables: None, caplog: pytest.LogCaptureFixture
) -> None:
    running = await Gateway.start(make_settings(database_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await AuthServiceStub(channel).Register(
                pb.RegisterRequest(email="held@example.com", password=STRONG_PASSWORD)
            )
        await asyncio.sleep(1.2)
        async with running.resources.sessions() as session:
            row = (await session.execute(select(MailOutbox))).scalar_one()
        assert (row.status, row.attempts) == ("pending", 0)
        assert any("NUELL_SMTP_URL is not set" in r.getMessage() for r in caplog.records)
    finally:
        await running.stop()


# ------------------------------------------------------------ TLS and AUTH


@pytest.fixture(scope="module")
def smtp_ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # see Mailbox.start
@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_mail_goes_over_verified_tls_with_the_urls_credentials(
    database_url: URL,
    empty_tables: None,
    smtp_ca: trustme.CA,
    tls: Literal["starttls", "implicit"],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """smtp:// upgrades with STARTTLS, smtps:// starts in TLS; both check the
    server's certificate against the system's trust store, then sign in."""
    trusted = tmp_path / "ca.pem"
    smtp_ca.cert_pem.write_to_path(str(trusted))
    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))  # the "system" store
    box = Mailbox(
        tls=tls,
        certificate=smtp_ca.issue_cert("127.0.0.1"),
        credentials=("nuell", "s3cret-パス"),
    )
    box.start()
    running = await Gateway.start(make_settings(database_url, **_settings(database_url, box)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await AuthServiceStub(channel).Register(
                pb.RegisterRequest(email="tls@example.com", password=STRONG_PASSWORD)
            )
        [mail] = await box.wait_for(1)
        assert (mail.envelope_to, mail.over_tls, mail.login) == (
            ["tls@example.com"],
            True,
            "nuell",
        )
    finally:
        await running.stop()
        box.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # see Mailbox.start
async def test_an_untrusted_certificate_holds_the_mail_back(
    database_url: URL, empty_tables: None, smtp_ca: trustme.CA
) -> None:
    """A server whose certificate nothing vouches for gets no mail and no password."""
    box = Mailbox(
        tls="implicit",
        certificate=smtp_ca.issue_cert("127.0.0.1"),
        credentials=("nuell", "s3cret"),
    )
    box.start()
    running = await Gateway.start(make_settings(database_url, **_settings(database_url, box)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            reply = await AuthServiceStub(channel).Register(
                pb.RegisterRequest(email="untrusted@example.com", password=STRONG_PASSWORD)
            )
        assert reply == pb.RegisterResponse()
        async with asyncio.timeout(10):
            while True:
                async with running.resources.sessions() as session:
                    row = (await session.execute(select(MailOutbox))).scalar_one()
                if row.attempts >= 2:
                    break
                await asyncio.sleep(0.1)
        assert (row.status, box.received) == ("pending", [])
    finally:
        await running.stop()
        box.stop()
