"""Sessions, refresh reuse, two-factor sign-in, per-account throttling and the audit trail.

Against the real gateway and PostgreSQL; TOTP codes are computed with
pyotp for a pinned clock (`second_factor.clock`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import grpc
import pyotp
import pytest
from google.protobuf import field_mask_pb2
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.sessions.v1 import session_service_pb2 as spb
from nuell.sessions.v1.session_service_pb2_grpc import SessionServiceStub
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as upb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy import select, text
from sqlalchemy.engine import URL

from nuell_gateway import audit, second_factor
from nuell_gateway.authz import Role
from nuell_gateway.db import one_time_tokens
from nuell_gateway.db.models import AUTH_EVENT_TYPES, AuthEvent, SignInThrottle, TotpFactor
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_opaque_token
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.factories import TestUser, bearer, make_user
from tests.utils.rpc import error_details

NOW = 1_800_000_000.0  # a fixed instant, the start of a 30-second step
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture
def sessions_api(channel: grpc.aio.Channel) -> SessionServiceStub:
    return SessionServiceStub(channel)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [NOW]
    monkeypatch.setattr(second_factor, "clock", lambda: now[0])
    return now


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _login(auth: AuthServiceStub, user: TestUser) -> pb.LoginResponse:
    reply: pb.LoginResponse = await auth.Login(
        pb.LoginRequest(email=user.email, password=user.password)
    )
    return reply


async def _login_as_app(gateway: Gateway, user: TestUser, app: str) -> pb.LoginResponse:
    """A Login from a client whose user agent starts with `app`."""
    options = [("grpc.primary_user_agent", app)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=options) as channel:
        return await _login(AuthServiceStub(channel), user)


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _me(users: UserServiceStub, access: str) -> grpc.StatusCode:
    return await _code(users.GetCurrentUser(upb.GetCurrentUserRequest(), metadata=_bearer(access)))


async def _events(resources: Resources, user: TestUser) -> list[AuthEvent]:
    async with resources.sessions() as db:
        rows = await db.execute(
            select(AuthEvent).where(AuthEvent.user_id == user.id).order_by(AuthEvent.id)
        )
        return list(rows.scalars())


# ------------------------------------------------------------------ sessions


async def test_a_session_lists_where_it_signed_in_and_ends_with_its_tokens(
    gateway: Gateway,
    auth: AuthServiceStub,
    users: UserServiceStub,
    sessions_api: SessionServiceStub,
    alice: TestUser,
) -> None:
    laptop = await _login_as_app(gateway, alice, "Mozilla/5.0 (X11; Linux x86_64)")
    phone = await _login_as_app(gateway, alice, "NuellPhone/1.0")
    listed = await sessions_api.ListSessions(
        spb.ListSessionsRequest(), metadata=_bearer(laptop.access_token)
    )
    mine = [s for s in listed.sessions if s.user_agent.startswith(("Mozilla", "NuellPhone"))]
    assert [s.user_agent.split()[0] for s in mine] == ["NuellPhone/1.0", "Mozilla/5.0"]
    assert "(X11; Linux x86_64)" in mine[1].user_agent
    assert [s.current for s in mine] == [False, True]
    assert all(s.ip_address == "127.0.0.1" for s in mine)
    assert all(s.expire_time.seconds > s.create_time.seconds for s in mine)

    await sessions_api.RevokeSession(
        spb.RevokeSessionRequest(id=mine[0].id), metadata=_bearer(laptop.access_token)
    )
    # The phone's access token and refresh token stop at once; the laptop goes on.
    assert await _me(users, phone.access_token) == UNAUTH
    assert await _code(auth.Refresh(pb.RefreshRequest(refresh_token=phone.refresh_token))) == UNAUTH
    assert await _me(users, laptop.access_token) == grpc.StatusCode.OK


async def test_logout_and_change_password_stop_access_tokens_at_once(
    auth: AuthServiceStub, users: UserServiceStub, alice: TestUser
) -> None:
    first, second = await _login(auth, alice), await _login(auth, alice)
    await auth.Logout(pb.LogoutRequest(refresh_token=first.refresh_token))
    assert await _me(users, first.access_token) == UNAUTH
    assert await _me(users, second.access_token) == grpc.StatusCode.OK
    await auth.ChangePassword(
        pb.ChangePasswordRequest(current_password=alice.password, new_password="Brand-New-Pass-9"),
        metadata=_bearer(second.access_token),
    )
    assert await _me(users, second.access_token) == UNAUTH
    assert (
        await _code(auth.Refresh(pb.RefreshRequest(refresh_token=second.refresh_token))) == UNAUTH
    )


async def test_tokens_from_before_a_deactivation_stay_dead_after_reactivation(
    auth: AuthServiceStub, users: UserServiceStub, resources: Resources, alice: TestUser
) -> None:
    admin = await make_user(resources.sessions, role=Role.ADMIN)
    login = await _login(auth, alice)

    async def set_active(active: bool) -> None:
        await users.UpdateUser(
            upb.UpdateUserRequest(
                user=user_pb2.User(id=str(alice.id), is_active=active),
                update_mask=field_mask_pb2.FieldMask(paths=["is_active"]),
            ),
            metadata=bearer(resources.access_tokens, admin),
        )

    await set_active(False)
    await set_active(True)
    assert await _me(users, login.access_token) == UNAUTH
    assert await _code(auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))) == UNAUTH
    kinds = [e.type for e in await _events(resources, alice)]
    assert {"deactivated", "reactivated", "session_revoked"} <= set(kinds)


async def test_revoke_other_sessions_keeps_this_one(
    auth: AuthServiceStub, users: UserServiceStub, sessions_api: SessionServiceStub, alice: TestUser
) -> None:
    keep, *others = [await _login(auth, alice) for _ in range(3)]
    await sessions_api.RevokeOtherSessions(
        spb.RevokeOtherSessionsRequest(), metadata=_bearer(keep.access_token)
    )
    assert await _me(users, keep.access_token) == grpc.StatusCode.OK
    assert [await _me(users, o.access_token) for o in others] == [UNAUTH, UNAUTH]


async def test_a_revoked_session_is_refused_by_another_gateway_within_a_second(
    database_url: URL, auth: AuthServiceStub, sessions_api: SessionServiceStub, alice: TestUser
) -> None:
    login = await _login(auth, alice)
    other = await Gateway.start(make_settings(database_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            there = UserServiceStub(channel)
            assert await _me(there, login.access_token) == grpc.StatusCode.OK  # now cached there
            listed = await sessions_api.ListSessions(
                spb.ListSessionsRequest(), metadata=_bearer(login.access_token)
            )
            current = next(s for s in listed.sessions if s.current)
            await sessions_api.RevokeSession(
                spb.RevokeSessionRequest(id=current.id), metadata=bearer_for(alice, other)
            )
            started = time.monotonic()
            while await _me(there, login.access_token) == grpc.StatusCode.OK:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.02)
    finally:
        await other.stop()


def bearer_for(user: TestUser, gateway: Gateway) -> tuple[tuple[str, str], ...]:
    return bearer(gateway.resources.access_tokens, user)


async def test_another_accounts_session_is_not_found_for_a_user_and_revocable_by_an_admin(
    auth: AuthServiceStub,
    users: UserServiceStub,
    sessions_api: SessionServiceStub,
    resources: Resources,
    alice: TestUser,
    bob: TestUser,
) -> None:
    login = await _login(auth, alice)
    listed = await sessions_api.ListSessions(
        spb.ListSessionsRequest(), metadata=_bearer(login.access_token)
    )
    target = next(s for s in listed.sessions if s.current).id
    refused = await _code(
        sessions_api.RevokeSession(
            spb.RevokeSessionRequest(id=target), metadata=bearer(resources.access_tokens, bob)
        )
    )
    assert refused == grpc.StatusCode.NOT_FOUND
    assert await _me(users, login.access_token) == grpc.StatusCode.OK
    admin = await make_user(resources.sessions, role=Role.ADMIN)
    as_admin = bearer(resources.access_tokens, admin)
    theirs = await sessions_api.ListSessions(
        spb.ListSessionsRequest(user_id=str(alice.id)), metadata=as_admin
    )
    assert target in {s.id for s in theirs.sessions}
    await sessions_api.RevokeSession(spb.RevokeSessionRequest(id=target), metadata=as_admin)
    assert await _me(users, login.access_token) == UNAUTH
    revoked = [e for e in await _events(resources, alice) if e.type == "session_revoked"]
    assert revoked[-1].actor_id == admin.id
    assert revoked[-1].reason == "revoked_by_admin"


async def test_sessions_page_newest_first_without_repeats(
    auth: AuthServiceStub, sessions_api: SessionServiceStub, alice: TestUser
) -> None:
    logins = [await _login(auth, alice) for _ in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await sessions_api.ListSessions(
            spb.ListSessionsRequest(page_size=2, page_token=token),
            metadata=_bearer(logins[-1].access_token),
        )
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 6  # five logins and the fixture's session
    foreign = await _code(
        sessions_api.ListSessions(
            spb.ListSessionsRequest(page_token="bogus"), metadata=_bearer(logins[0].access_token)
        )
    )
    assert foreign == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------ refresh reuse


async def test_a_retried_refresh_within_the_grace_gets_the_same_pair(
    auth: AuthServiceStub, resources: Resources, alice: TestUser
) -> None:
    login = await _login(auth, alice)
    first = await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    again = await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    assert (again.access_token, again.refresh_token) == (first.access_token, first.refresh_token)
    assert "refresh_reuse" not in [e.type for e in await _events(resources, alice)]


async def test_reuse_after_the_grace_ends_the_session_and_is_recorded(
    database_url: URL, empty_tables: None
) -> None:
    gateway = await Gateway.start(make_settings(database_url, refresh_reuse_grace_seconds=1))
    try:
        alice = await make_user(gateway.resources.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            auth = AuthServiceStub(channel)
            login = await _login(auth, alice)
            successor = await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
            await asyncio.sleep(2.2)
            assert (
                await _code(auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token)))
                == UNAUTH
            )
            # The thief's replay ended the session: the legitimate successor is dead too.
            assert (
                await _code(auth.Refresh(pb.RefreshRequest(refresh_token=successor.refresh_token)))
                == UNAUTH
            )
        kinds = [e.type for e in await _events(gateway.resources, alice)]
        assert "refresh_reuse" in kinds
        assert "session_revoked" in kinds
    finally:
        await gateway.stop()


# -------------------------------------------------------------------- TOTP


async def _enroll(
    auth: AuthServiceStub, access: str, user: TestUser
) -> tuple[pyotp.TOTP, list[str]]:
    enrolled = await auth.EnrollTotp(
        pb.EnrollTotpRequest(current_password=user.password), metadata=_bearer(access)
    )
    assert enrolled.otpauth_uri.startswith("otpauth://totp/Nuell:")
    totp = pyotp.TOTP(enrolled.secret)
    confirmed = await auth.ConfirmTotp(
        pb.ConfirmTotpRequest(code=totp.at(NOW)), metadata=_bearer(access)
    )
    return totp, list(confirmed.recovery_codes)


async def test_totp_sign_in_from_enrolment_to_verify_mfa(
    auth: AuthServiceStub,
    users: UserServiceStub,
    resources: Resources,
    alice: TestUser,
    frozen_clock: list[float],
) -> None:
    login = await _login(auth, alice)
    totp, codes = await _enroll(auth, login.access_token, alice)
    assert len(codes) == len(set(codes)) == 10
    # The secret is stored encrypted, never as the base32 the app got.
    async with resources.sessions() as db:
        factor = await db.get(TotpFactor, alice.id)
    assert factor is not None
    assert totp.secret.encode() not in factor.secret_ciphertext

    frozen_clock[0] = NOW + 60
    challenge = await _login(auth, alice)
    assert challenge.mfa_required
    assert challenge.mfa_token
    assert not challenge.access_token
    verified = await auth.VerifyMfa(
        pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=totp.at(NOW + 60))
    )
    assert await _me(users, verified.access_token) == grpc.StatusCode.OK
    # The mfa_token is single use, and so is the code.
    again = await _code(
        auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=totp.at(NOW + 60)))
    )
    assert again == UNAUTH
    replay = await _login(auth, alice)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.VerifyMfa(
            pb.VerifyMfaRequest(mfa_token=replay.mfa_token, code=totp.at(NOW + 60))
        )
    assert error_details(caught.value).error_info.reason == "INVALID_MFA_CODE"  # type: ignore[union-attr]
    kinds = {e.type for e in await _events(resources, alice)}
    assert {"totp_enrolled", "mfa_passed", "mfa_failed", "sign_in_succeeded"} <= kinds


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-30, True), (30, True), (-60, False), (60, False)]
)
async def test_a_code_one_step_either_side_is_accepted_two_steps_not(
    auth: AuthServiceStub, alice: TestUser, frozen_clock: list[float], offset: int, accepted: bool
) -> None:
    login = await _login(auth, alice)
    totp, _ = await _enroll(auth, login.access_token, alice)
    frozen_clock[0] = NOW + 300
    challenge = await _login(auth, alice)
    code = await _code(
        auth.VerifyMfa(
            pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=totp.at(NOW + 300 + offset))
        )
    )
    assert code == (grpc.StatusCode.OK if accepted else UNAUTH)


async def test_recovery_codes_work_once_and_five_wrong_codes_end_the_mfa_token(
    auth: AuthServiceStub,
    users: UserServiceStub,
    resources: Resources,
    alice: TestUser,
    frozen_clock: list[float],
) -> None:
    login = await _login(auth, alice)
    _, codes = await _enroll(auth, login.access_token, alice)
    challenge = await _login(auth, alice)
    spaced = codes[0].upper().replace("-", " ")  # as someone types it off paper
    verified = await auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=spaced))
    assert await _me(users, verified.access_token) == grpc.StatusCode.OK
    challenge = await _login(auth, alice)
    assert (
        await _code(
            auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=codes[0]))
        )
        == UNAUTH
    )
    for _ in range(4):
        await _code(
            auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code="000000"))
        )
    # Five wrong codes: even a right one no longer opens this mfa_token.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=challenge.mfa_token, code=codes[1]))
    assert caught.value.code() in (UNAUTH, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "recovery_code_used" in {e.type for e in await _events(resources, alice)}


async def test_disable_totp_needs_a_code_and_turns_the_second_step_off(
    auth: AuthServiceStub, users: UserServiceStub, alice: TestUser, frozen_clock: list[float]
) -> None:
    login = await _login(auth, alice)

    async def me() -> user_pb2.User:
        reply: upb.GetCurrentUserResponse = await users.GetCurrentUser(
            upb.GetCurrentUserRequest(), metadata=_bearer(login.access_token)
        )
        return reply.user

    before = await me()
    assert not before.totp_enabled
    totp, _ = await _enroll(auth, login.access_token, alice)
    enabled = await me()
    assert enabled.totp_enabled
    assert enabled.etag != before.etag
    wrong = await _code(
        auth.DisableTotp(pb.DisableTotpRequest(code="000000"), metadata=_bearer(login.access_token))
    )
    assert wrong == UNAUTH
    frozen_clock[0] = NOW + 30
    await auth.DisableTotp(
        pb.DisableTotpRequest(code=totp.at(NOW + 30)), metadata=_bearer(login.access_token)
    )
    assert not (await _login(auth, alice)).mfa_required
    assert not (await me()).totp_enabled
    twice = await _code(
        auth.DisableTotp(
            pb.DisableTotpRequest(code=totp.at(NOW + 30)), metadata=_bearer(login.access_token)
        )
    )
    assert twice == grpc.StatusCode.FAILED_PRECONDITION


async def test_enrolment_without_configured_keys_is_a_clear_refusal(
    database_url: URL, empty_tables: None
) -> None:
    gateway = await Gateway.start(make_settings(database_url, totp_keys=""))
    try:
        alice = await make_user(gateway.resources.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await AuthServiceStub(channel).EnrollTotp(
                    pb.EnrollTotpRequest(current_password=alice.password),
                    metadata=bearer(gateway.resources.access_tokens, alice),
                )
        details = error_details(caught.value)
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.error_info is not None
        assert details.error_info.reason == "TOTP_NOT_CONFIGURED"
    finally:
        await gateway.stop()


# ---------------------------------------------------------------- throttling


async def _wrong_login(auth: AuthServiceStub, email: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Login(pb.LoginRequest(email=email, password="Wrong-Password-1"))
    return caught.value


async def test_after_five_failures_an_account_is_throttled_known_or_not_alike(
    auth: AuthServiceStub, resources: Resources, alice: TestUser
) -> None:
    answers = []
    for email in (alice.email, "nobody-here@example.com"):
        codes = [(await _wrong_login(auth, email)).code() for _ in range(5)]
        assert codes == [UNAUTH] * 5
        throttled = error_details(await _wrong_login(auth, email))
        assert throttled.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert throttled.error_info is not None
        assert throttled.error_info.reason == "TOO_MANY_ATTEMPTS"
        assert throttled.retry_info is not None
        assert 0 < throttled.retry_info.retry_delay.ToTimedelta().total_seconds() <= 1
        answers.append((throttled.code, throttled.message, throttled.error_info.reason))
    assert answers[0] == answers[1]
    # Even the right password is refused while locked, unchecked.
    locked = await _code(_login(auth, alice))
    assert locked == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The delay doubles: after it passes, one more failure locks for 2 s.
    await asyncio.sleep(1.1)
    await _wrong_login(auth, alice.email)
    delay = error_details(await _wrong_login(auth, alice.email)).retry_info
    assert delay is not None
    assert 1 < delay.retry_delay.ToTimedelta().total_seconds() <= 2
    await asyncio.sleep(2.1)
    assert (await _login(auth, alice)).access_token  # success resets the count
    async with resources.sessions() as db:
        assert await db.get(SignInThrottle, str(alice.id)) is None


async def test_fifty_concurrent_wrong_guesses_count_fifty(
    auth: AuthServiceStub, resources: Resources, alice: TestUser
) -> None:
    answers = await asyncio.gather(
        *[
            _code(auth.Login(pb.LoginRequest(email=alice.email, password=f"Wrong-{i}-Pass!")))
            for i in range(50)
        ]
    )
    async with resources.sessions() as db:
        row = await db.get(SignInThrottle, str(alice.id))
    assert row is not None
    # Every guess that was checked is counted (no lost update); the rest were
    # refused unchecked once the lock was in place.
    assert row.failures == answers.count(UNAUTH) >= 5
    assert answers.count(UNAUTH) + answers.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 50
    refused = await _code(_login(auth, alice))
    assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_stolen_access_token_cannot_guess_the_password_through_change_password(
    auth: AuthServiceStub, resources: Resources, alice: TestUser
) -> None:
    token = bearer(resources.access_tokens, alice)
    codes = [
        await _code(
            auth.ChangePassword(
                pb.ChangePasswordRequest(
                    current_password=f"Guess-{i}-Pass!", new_password="Brand-New-Pass-9"
                ),
                metadata=token,
            )
        )
        for i in range(6)
    ]
    assert codes == [UNAUTH] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    # The same account's Login is locked too: one count per account.
    assert await _code(_login(auth, alice)) == grpc.StatusCode.RESOURCE_EXHAUSTED


# --------------------------------------------------------------------- audit


async def test_audit_events_list_newest_first_and_hold_no_secret(
    gateway: Gateway,
    auth: AuthServiceStub,
    sessions_api: SessionServiceStub,
    resources: Resources,
    alice: TestUser,
    bob: TestUser,
    frozen_clock: list[float],
) -> None:
    await _wrong_login(auth, alice.email)
    login = await _login_as_app(gateway, alice, "NuellBrowser/1.0")
    totp, codes = await _enroll(auth, login.access_token, alice)
    await auth.Logout(pb.LogoutRequest(refresh_token=login.refresh_token))
    fresh = await auth.VerifyMfa(
        pb.VerifyMfaRequest(mfa_token=(await _login(auth, alice)).mfa_token, code=codes[3])
    )
    events, token = [], ""
    while True:
        page = await sessions_api.ListAuditEvents(
            spb.ListAuditEventsRequest(page_size=3, page_token=token),
            metadata=_bearer(fresh.access_token),
        )
        events += page.events
        token = page.next_page_token
        if not token:
            break
    kinds = [spb.AuditEventType.Name(e.type) for e in events]
    assert kinds[-1] == "AUDIT_EVENT_TYPE_SIGN_IN_FAILED"
    assert {
        "AUDIT_EVENT_TYPE_TOTP_ENROLLED",
        "AUDIT_EVENT_TYPE_SESSION_REVOKED",
        "AUDIT_EVENT_TYPE_RECOVERY_CODE_USED",
    } <= set(kinds)
    times = [(e.create_time.seconds, e.create_time.nanos) for e in events]
    assert times == sorted(times, reverse=True)
    assert any(
        e.user_agent.startswith("NuellBrowser/1.0") and e.ip_address == "127.0.0.1" for e in events
    )
    # Nothing secret anywhere in the table.
    async with resources.sessions() as db:
        dump = str((await db.execute(text("SELECT * FROM auth_events"))).all())
    for secret in (
        alice.password,
        "Wrong-Password-1",
        totp.secret,
        *codes,
        login.refresh_token,
        login.access_token,
        alice.email,
    ):
        assert secret not in dump
    # Someone else's trail is not bob's to read.
    denied = await _code(
        sessions_api.ListAuditEvents(
            spb.ListAuditEventsRequest(user_id=str(alice.id)),
            metadata=bearer(resources.access_tokens, bob),
        )
    )
    assert denied == grpc.StatusCode.PERMISSION_DENIED


async def test_audit_rows_cannot_be_rewritten(
    resources: Resources, alice: TestUser, auth: AuthServiceStub
) -> None:
    await _login(auth, alice)
    async with resources.sessions() as db:
        with pytest.raises(Exception, match="append-only"):
            await db.execute(text("UPDATE auth_events SET reason = 'x'"))


async def test_retention_drops_old_events_and_quiet_failure_counts_only(
    auth: AuthServiceStub, resources: Resources, alice: TestUser
) -> None:
    await _wrong_login(auth, alice.email)
    await _login(auth, alice)  # resets alice's count
    await _wrong_login(auth, "nobody-else@example.com")
    async with resources.sessions.begin() as db:
        # Rows cannot be rewritten (the trigger), so an old one is written as old.
        await db.execute(
            text(
                "INSERT INTO auth_events (id, created_at, type, user_id) "
                "VALUES (gen_random_uuid(), now() - interval '366 days', 'password_changed', :u)"
            ),
            {"u": alice.id},
        )
    await audit.prune(resources)
    kinds = [e.type for e in await _events(resources, alice)]
    assert "password_changed" not in kinds
    assert {"sign_in_failed", "sign_in_succeeded"} <= set(kinds)  # recent: kept
    async with resources.sessions() as db:
        counts = (await db.execute(select(SignInThrottle))).scalars().all()
    assert len(counts) == 1  # the unknown address's count is 15 minutes from quiet


async def _mailed_token(resources: Resources, user: TestUser, purpose: str, email: str) -> str:
    """A link token as the mail would carry it (the mail path has tests of its own)."""
    token = new_opaque_token()
    async with resources.sessions.begin() as db:
        await one_time_tokens.store_token(
            db,
            user_id=user.id,
            purpose=purpose,
            email=email,
            digest=token.digest,
            ttl=timedelta(hours=1),
        )
    return token.value


async def test_every_kind_of_event_is_recorded(
    database_url: URL, empty_tables: None, frozen_clock: list[float]
) -> None:
    gateway = await Gateway.start(make_settings(database_url, refresh_reuse_grace_seconds=0))
    resources = gateway.resources
    try:
        alice = await make_user(resources.sessions, email_verified=False)
        admin = await make_user(resources.sessions, role=Role.ADMIN)
        as_admin = bearer(resources.access_tokens, admin)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            auth, users = AuthServiceStub(channel), UserServiceStub(channel)

            async def update(**fields: object) -> None:
                await users.UpdateUser(
                    upb.UpdateUserRequest(
                        user=user_pb2.User(id=str(alice.id), **fields),  # type: ignore[arg-type]
                        update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
                    ),
                    metadata=as_admin,
                )

            await auth.VerifyEmail(
                pb.VerifyEmailRequest(
                    token=await _mailed_token(resources, alice, "verify_email", alice.email)
                )
            )
            await _wrong_login(auth, alice.email)
            login = await _login(auth, alice)
            await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
            await _code(auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token)))
            await update(role=user_pb2.ROLE_ADMIN)
            await update(role=user_pb2.ROLE_USER)
            await update(is_active=False)
            await update(is_active=True)
            login = await _login(auth, alice)
            totp, codes = await _enroll(auth, login.access_token, alice)
            frozen_clock[0] = NOW + 30
            step = (await _login(auth, alice)).mfa_token
            await _code(auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=step, code="000000")))
            await auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=step, code=totp.at(NOW + 30)))
            step = (await _login(auth, alice)).mfa_token
            login2 = await auth.VerifyMfa(pb.VerifyMfaRequest(mfa_token=step, code=codes[0]))
            await auth.DisableTotp(
                pb.DisableTotpRequest(code=codes[1]), metadata=_bearer(login2.access_token)
            )
            await auth.ChangePassword(
                pb.ChangePasswordRequest(
                    current_password=alice.password, new_password="Brand-New-Pass-9"
                ),
                metadata=_bearer(login2.access_token),
            )
            await auth.ResetPassword(
                pb.ResetPasswordRequest(
                    token=await _mailed_token(resources, alice, "reset_password", alice.email),
                    new_password="Second-New-Pass-8",
                )
            )
            moved = f"moved-{alice.id.hex[:8]}@example.com"
            await auth.ConfirmEmailChange(
                pb.ConfirmEmailChangeRequest(
                    token=await _mailed_token(resources, alice, "change_email", moved)
                )
            )
            for _ in range(6):
                await _wrong_login(auth, moved)
        recorded = {e.type for e in await _events(resources, alice)}
        assert recorded == set(AUTH_EVENT_TYPES)
    finally:
        await gateway.stop()


async def test_totp_keys_rotate_like_the_signing_keys(
    database_url: URL, auth: AuthServiceStub, alice: TestUser, frozen_clock: list[float]
) -> None:
    login = await _login(auth, alice)
    totp, _ = await _enroll(auth, login.access_token, alice)  # under t2026, the first key

    async def second_step(totp_keys: str, at: float) -> grpc.StatusCode:
        gateway = await Gateway.start(make_settings(database_url, totp_keys=totp_keys))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                there = AuthServiceStub(channel)
                frozen_clock[0] = at
                step = (await _login(there, alice)).mfa_token
                return await _code(
                    there.VerifyMfa(pb.VerifyMfaRequest(mfa_token=step, code=totp.at(at)))
                )
        finally:
            await gateway.stop()

    # A new key in front, the old one still listed: the stored secret still opens.
    assert await second_step("t2027:" + "n" * 40 + ",t2026:" + "t" * 40, NOW + 60) == (
        grpc.StatusCode.OK
    )
    # The old key removed too soon: a clear refusal, not a crash or a silent pass.
    assert await second_step("t2027:" + "n" * 40, NOW + 90) == grpc.StatusCode.FAILED_PRECONDITION
