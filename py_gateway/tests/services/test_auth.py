"""AuthService end to end: register, login, refresh, logout, change password."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import argon2
import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy import func, select, update
from sqlalchemy.engine import URL

from nuell_gateway.db.models import RefreshToken, User
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.factories import make_user
from tests.utils.rpc import error_details
from tests.utils.samples import STRONG_PASSWORD
from tests.utils.snapshot import SECURITY_RECORDS, snapshot


async def _login(
    auth: AuthServiceStub, email: str, password: str = STRONG_PASSWORD
) -> pb.LoginResponse:
    response: pb.LoginResponse = await auth.Login(pb.LoginRequest(email=email, password=password))
    return response


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# ------------------------------------------------------------------ Register


async def test_register_stores_an_argon2id_hash_and_normalises_the_email(
    auth: AuthServiceStub, resources: Resources
) -> None:
    reply = await auth.Register(
        pb.RegisterRequest(email="Ada.Lovelace@Example.COM", password=STRONG_PASSWORD)
    )
    # Empty for new and taken addresses alike (the account is read after sign-in).
    assert reply == pb.RegisterResponse()
    async with resources.sessions() as session:
        stored = (await session.execute(select(User))).scalar_one()
    assert stored.email == "Ada.Lovelace@example.com"
    assert stored.role == "user"
    assert stored.is_active
    assert not stored.email_verified
    assert stored.locale == "en"
    assert stored.hashed_password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert STRONG_PASSWORD not in stored.hashed_password
    assert stored.id.version == 7


async def test_register_never_changes_a_taken_account_in_any_case(
    auth: AuthServiceStub, resources: Resources
) -> None:
    first = await auth.Register(
        pb.RegisterRequest(email="ada@example.com", password=STRONG_PASSWORD)
    )
    before = (await snapshot(resources.sessions))["users"]
    again = await auth.Register(
        pb.RegisterRequest(email="ADA@example.com", password="Other-Pass-123", locale="ja")
    )
    assert again == first == pb.RegisterResponse()
    assert (await snapshot(resources.sessions))["users"] == before


@pytest.mark.parametrize(
    ("password", "broken"),
    [
        ("short", {"string.min_len", "password.uppercase", "password.digit", "password.symbol"}),
        ("alllowercaseletters", {"password.uppercase", "password.digit", "password.symbol"}),
        ("ALLUPPERCASE123!", {"password.lowercase"}),
        ("NoDigitsHere!!", {"password.digit"}),
        ("NoSymbols12345", {"password.symbol"}),
        ("x" * 129 + "A1!", {"string.max_len"}),
    ],
)
async def test_register_reports_every_broken_password_rule_at_once(
    auth: AuthServiceStub, resources: Resources, password: str, broken: set[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Register(pb.RegisterRequest(email="ada@example.com", password=password))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in details.violations if v.field == "password"} == broken
    assert password not in str(caught.value)
    assert (await snapshot(resources.sessions))["users"] == []


async def test_non_latin_passwords_qualify(auth: AuthServiceStub, resources: Resources) -> None:
    await auth.Register(pb.RegisterRequest(email="kenji@example.jp", password="Пароль-Тест-2026"))
    assert len((await snapshot(resources.sessions))["users"]) == 1


# --------------------------------------------------------------------- Login


async def test_login_issues_a_complete_access_token_and_a_refresh_token(
    auth: AuthServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    reply = await _login(auth, user.email)
    assert reply.token_type == "Bearer"
    assert reply.expires_in == 1800
    assert reply.scope == "compute posts profile"
    header = jwt.get_unverified_header(reply.access_token)
    assert header == {"alg": "HS256", "kid": "k2026", "typ": "JWT"}
    claims = jwt.decode(reply.access_token, options={"verify_signature": False})
    assert set(claims) == {"sub", "exp", "iat", "nbf", "jti", "iss", "aud", "scope", "gen", "sid"}
    assert claims["gen"] == 0
    assert claims["sub"] == str(user.id)
    assert claims["exp"] - claims["iat"] == 1800
    assert (claims["iss"], claims["aud"]) == ("nuell", "nuell-api")
    assert len(reply.refresh_token) >= 43
    async with resources.sessions() as session:
        stored = (await session.execute(select(RefreshToken))).scalar_one()
    assert stored.token_hash == hashlib.sha256(reply.refresh_token.encode()).digest()


async def test_login_email_is_case_insensitive(auth: AuthServiceStub, resources: Resources) -> None:
    user = await make_user(resources.sessions, email="Grace@Example.com")
    reply = await _login(auth, "grace@EXAMPLE.com")
    assert jwt.decode(reply.access_token, options={"verify_signature": False})["sub"] == str(
        user.id
    )


async def test_login_failures_are_indistinguishable(
    auth: AuthServiceStub, resources: Resources
) -> None:
    known = await make_user(resources.sessions)
    inactive = await make_user(resources.sessions, is_active=False)
    answers = []
    for email, password in [
        ("nobody@example.com", STRONG_PASSWORD),
        (known.email, "Wrong-Password-1"),
        (inactive.email, STRONG_PASSWORD),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _login(auth, email, password)
        details = error_details(caught.value)
        answers.append((details.code, details.message, details.error_info, details.violations))
    assert answers[0][0] == grpc.StatusCode.UNAUTHENTICATED
    assert answers[0] == answers[1] == answers[2]


async def test_login_takes_the_same_time_for_unknown_email_and_wrong_password(
    auth: AuthServiceStub, resources: Resources
) -> None:
    known = await make_user(resources.sessions)

    async def timed(email: str) -> float:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError):
            await _login(auth, email, "Wrong-Password-1")
        return time.perf_counter() - started

    unknown, wrong = [], []
    for _ in range(15):  # interleaved, so drift affects both alike
        unknown.append(await timed("nobody@example.com"))
        wrong.append(await timed(known.email))
    ratio = statistics.median(unknown) / statistics.median(wrong)
    # Without the dummy hash an unknown email answers ~20x faster.
    assert 0.7 < ratio < 1.4, (statistics.median(unknown), statistics.median(wrong))


async def test_login_rehashes_when_parameters_rose(database_url: URL, empty_tables: None) -> None:
    gateway = await Gateway.start(make_settings(database_url, argon2_time_cost=3))
    try:
        weaker = argon2.PasswordHasher(time_cost=2, memory_cost=19456).hash(STRONG_PASSWORD)
        user = await make_user(gateway.resources.sessions, hashed_password=weaker)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            await _login(AuthServiceStub(channel), user.email)
        async with gateway.resources.sessions() as session:
            stored = await session.get(User, user.id)
        assert stored is not None
        assert stored.hashed_password.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
        assert argon2.PasswordHasher().verify(stored.hashed_password, STRONG_PASSWORD)
    finally:
        await gateway.stop()


async def test_hashing_does_not_block_other_calls(database_url: URL, empty_tables: None) -> None:
    # Slow hashes (t=12, ~150 ms each) make a blocked event loop obvious.
    gateway = await Gateway.start(make_settings(database_url, argon2_time_cost=12))
    try:
        user = await make_user(gateway.resources.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            auth, health = AuthServiceStub(channel), health_pb2_grpc.HealthStub(channel)
            logins = [
                asyncio.ensure_future(_login(auth, user.email, "Wrong-Password-1"))
                for _ in range(6)
            ]
            await asyncio.sleep(0.05)
            worst = 0.0
            while not all(login.done() for login in logins):
                started = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest())
                worst = max(worst, time.perf_counter() - started)
                await asyncio.sleep(0.01)
            await asyncio.gather(*logins, return_exceptions=True)
        assert worst < 0.1, f"a health check waited {worst:.3f} s behind password hashing"
    finally:
        await gateway.stop()


# ------------------------------------------------------------------- Refresh


@pytest.fixture
async def no_grace(database_url: URL, empty_tables: None) -> AsyncIterator[Gateway]:
    """A gateway where any reuse of a spent refresh token is a theft."""
    gateway = await Gateway.start(make_settings(database_url, refresh_reuse_grace_seconds=0))
    yield gateway
    await gateway.stop()


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(
    no_grace: Gateway,
) -> None:
    resources = no_grace.resources
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{no_grace.port}")
    auth = AuthServiceStub(channel)
    user = await make_user(resources.sessions)
    first = await _login(auth, user.email)
    second = await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.scope == first.scope

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    assert error_details(reused.value).code == grpc.StatusCode.UNAUTHENTICATED
    # The thief's replay killed the legitimate successor too.
    with pytest.raises(grpc.aio.AioRpcError) as successor:
        await auth.Refresh(pb.RefreshRequest(refresh_token=second.refresh_token))
    details = error_details(successor.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.error_info is not None
    assert details.error_info.reason == "INVALID_REFRESH_TOKEN"


async def test_other_logins_survive_a_revoked_family(no_grace: Gateway) -> None:
    auth = AuthServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{no_grace.port}"))
    user = await make_user(no_grace.resources.sessions)
    laptop, phone = await _login(auth, user.email), await _login(auth, user.email)
    await auth.Refresh(pb.RefreshRequest(refresh_token=laptop.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.Refresh(pb.RefreshRequest(refresh_token=laptop.refresh_token))
    assert (await auth.Refresh(pb.RefreshRequest(refresh_token=phone.refresh_token))).access_token


async def test_concurrent_refreshes_of_one_token_all_get_the_same_successor(
    auth: AuthServiceStub, users: UserServiceStub, resources: Resources
) -> None:
    """Twenty tabs refreshing at once: one rotation, twenty identical answers."""
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    results = await asyncio.gather(
        *[auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token)) for _ in range(20)],
        return_exceptions=True,
    )
    assert all(isinstance(r, pb.RefreshResponse) for r in results), results
    pairs = {
        (r.access_token, r.refresh_token) for r in results if isinstance(r, pb.RefreshResponse)
    }
    assert len(pairs) == 1
    ((access, successor),) = pairs
    async with resources.sessions() as session:
        stored = (await session.execute(select(func.count()).select_from(RefreshToken))).scalar()
    assert stored == 2  # the login's token and one successor, not twenty
    me = await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(access)
    )
    assert me.user.id == str(user.id)
    assert (await auth.Refresh(pb.RefreshRequest(refresh_token=successor))).refresh_token


@pytest.mark.parametrize("token", ["never-issued", "x" * 256])
async def test_refresh_with_unknown_token_is_unauthenticated(
    auth: AuthServiceStub, resources: Resources, token: str
) -> None:
    before = await snapshot(resources.sessions)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refresh(pb.RefreshRequest(refresh_token=token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await snapshot(resources.sessions) == before


async def test_expired_refresh_token_is_refused(
    auth: AuthServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    async with resources.sessions.begin() as session:
        await session.execute(
            update(RefreshToken).values(
                created_at=func.now() - timedelta(days=31),
                expires_at=func.now() - timedelta(days=1),
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_refresh_for_a_deactivated_account_is_refused(
    auth: AuthServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == user.id).values(is_active=False))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -------------------------------------------------------------------- Logout


async def test_logout_revokes_the_family_and_is_safe_to_repeat(
    auth: AuthServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    rotated = await auth.Refresh(pb.RefreshRequest(refresh_token=login.refresh_token))
    await auth.Logout(pb.LogoutRequest(refresh_token=rotated.refresh_token))
    await auth.Logout(pb.LogoutRequest(refresh_token=rotated.refresh_token))
    await auth.Logout(pb.LogoutRequest(refresh_token="never-issued"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Refresh(pb.RefreshRequest(refresh_token=rotated.refresh_token))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ------------------------------------------------------------ ChangePassword


async def test_change_password_replaces_it_and_revokes_every_refresh_token(
    auth: AuthServiceStub, users: UserServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    laptop, phone = await _login(auth, user.email), await _login(auth, user.email)
    await auth.ChangePassword(
        pb.ChangePasswordRequest(current_password=STRONG_PASSWORD, new_password="Brand-New-Pass-9"),
        metadata=_bearer(laptop.access_token),
    )
    for old in (laptop, phone):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Refresh(pb.RefreshRequest(refresh_token=old.refresh_token))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await _login(auth, user.email)
    fresh = await _login(auth, user.email, "Brand-New-Pass-9")
    me = await users.GetCurrentUser(
        user_service_pb2.GetCurrentUserRequest(), metadata=_bearer(fresh.access_token)
    )
    assert me.user.id == str(user.id)


async def test_change_password_needs_the_current_one(
    auth: AuthServiceStub, resources: Resources
) -> None:
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    before = await snapshot(resources.sessions)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ChangePassword(
            pb.ChangePasswordRequest(
                current_password="Not-The-Password-1", new_password="Brand-New-Pass-9"
            ),
            metadata=_bearer(login.access_token),
        )
    assert error_details(caught.value).code == grpc.StatusCode.UNAUTHENTICATED
    # Nothing changed but the record of the failed guess (it counts toward the throttle).
    after = await snapshot(resources.sessions, ignoring=SECURITY_RECORDS)
    assert after == {k: v for k, v in before.items() if k not in SECURITY_RECORDS}


@pytest.mark.parametrize(
    ("new_password", "reasons"),
    [
        ("weak", {"string.min_len", "password.uppercase", "password.digit", "password.symbol"}),
        (STRONG_PASSWORD, {"password.unchanged"}),
    ],
)
async def test_change_password_refuses_a_bad_new_password(
    auth: AuthServiceStub, resources: Resources, new_password: str, reasons: set[str]
) -> None:
    user = await make_user(resources.sessions)
    login = await _login(auth, user.email)
    before = await snapshot(resources.sessions)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.ChangePassword(
            pb.ChangePasswordRequest(current_password=STRONG_PASSWORD, new_password=new_password),
            metadata=_bearer(login.access_token),
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in details.violations} == reasons
    assert await snapshot(resources.sessions) == before
