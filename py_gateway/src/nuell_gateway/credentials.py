"""Signing in and out: passwords and second factors checked, sessions started, tokens rotated.

Keyword-only functions over the process's `Resources`, called by the
AuthService servicer. The rules kept here:

- Login answers alike, in the same time, for an unknown email, a wrong
  password and a deactivated account: a password is always verified, against
  a dummy hash when there is no account; and the per-account throttle
  (throttling.py) counts unknown addresses too.
- A password stored under weaker Argon2 parameters than the current ones is
  rehashed on a successful login.
- Hashing happens outside any transaction, so it never holds a pooled
  connection while the CPU works.
- With TOTP on, the password only earns an `mfa_token`; VerifyMfa with a
  code starts the session.
- Refresh tokens rotate on every use. The same token presented again within
  the reuse grace gets the same successor (two tabs, a retry): the successor
  and its access token are derived from the presented token under a key of
  our own, so nothing secret is stored to answer it. After the grace, reuse
  ends the session, and that is committed even though the call fails.
- Changing the password ends every session of the account.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import audit, clients, second_factor, sessions, throttling
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller
from nuell_gateway.db import refresh_tokens, users
from nuell_gateway.db import second_factor as factors
from nuell_gateway.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
)
from nuell_gateway.pagination import derived_keys
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_opaque_token, opaque_token_digest
from nuell_gateway.sessions import IssuedTokens

MAX_MFA_FAILURES = 5


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """Tokens, or (with TOTP on) the token that VerifyMfa takes."""

    tokens: IssuedTokens | None = None
    mfa_token: str = ""


def _bad_credentials() -> Unauthenticated:
    # One answer for unknown email, wrong password and deactivated account.
    return Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")


def _bad_refresh_token() -> Unauthenticated:
    return Unauthenticated(
        "the refresh token is invalid, expired or revoked", reason="INVALID_REFRESH_TOKEN"
    )


def _bad_mfa_token() -> Unauthenticated:
    return Unauthenticated(
        "the sign-in expired or had too many wrong codes; sign in again",
        reason="INVALID_MFA_TOKEN",
    )


async def log_in(resources: Resources, *, email: str, password: str) -> LoginOutcome:
    """A new session for the active account that `password` opens (or its MFA step)."""
    async with resources.sessions() as db:
        user = await users.find_user_by_email(db, email=email)
    attempts = throttling.Attempts.of_sign_in(resources, user.id if user else None, email)
    await attempts.check()
    outcome = await resources.passwords.verify(user.hashed_password if user else None, password)
    if user is None or not outcome.ok or not user.is_active:
        await attempts.failed(
            Event.SIGN_IN_FAILED,
            reason="unknown_account"
            if user is None
            else "wrong_password"
            if not outcome.ok
            else "inactive",
        )
        raise _bad_credentials()
    await attempts.succeeded()
    if resources.settings.require_email_verification and not user.email_verified:
        # Only with the right password, so it tells a stranger nothing.
        raise FailedPrecondition(
            "confirm your email address first: open the link we mailed you, "
            "or ask for a new one with ResendVerification",
            reason="EMAIL_NOT_VERIFIED",
        )
    async with resources.sessions.begin() as db:
        if outcome.rehashed:
            await users.update_user(
                db,
                user_id=user.id,
                expected_version=None,
                values={"hashed_password": outcome.rehashed},
            )
        if user.totp_enabled:
            challenge = new_opaque_token()
            await factors.start_challenge(
                db,
                user_id=user.id,
                digest=challenge.digest,
                ttl=timedelta(seconds=resources.settings.mfa_token_ttl_seconds),
            )
            return LoginOutcome(mfa_token=challenge.value)
        return LoginOutcome(
            tokens=await sessions.start(resources, db, user=user, reason="password")
        )


async def verify_mfa(resources: Resources, *, mfa_token: str, code: str) -> IssuedTokens:
    """The session a Login's `mfa_token` waits for, given a right code."""
    digest = opaque_token_digest(mfa_token)
    async with resources.sessions() as db:
        pending = await factors.open_challenge(db, digest=digest, max_failures=MAX_MFA_FAILURES)
        user_id = pending.user_id if pending else None
    if user_id is None:
        raise _bad_mfa_token()
    attempts = throttling.Attempts.of_account(resources, user_id)
    await attempts.check()
    async with resources.sessions.begin() as db:
        # Locked for the transaction: two calls with one token cannot both pass.
        challenge = await factors.open_challenge(db, digest=digest, max_failures=MAX_MFA_FAILURES)
        user = await users.get_user(db, user_id=user_id)
        factor = await factors.get_factor(db, user_id=user_id)
        if challenge is None or user is None or not user.is_active or factor is None:
            raise _bad_mfa_token()
        kind = await second_factor.accept_code(resources, db, factor=factor, code=code)
        if kind is None:
            await factors.fail_challenge(db, challenge_id=challenge.id)
        else:
            await factors.close_challenge(db, challenge_id=challenge.id)
            event = (
                Event.MFA_PASSED
                if kind is second_factor.CodeKind.TOTP
                else Event.RECOVERY_CODE_USED
            )
            await audit.record(db, event, user_id=user.id)
            tokens = await sessions.start(resources, db, user=user, reason=kind.value)
    if kind is None:
        await attempts.failed(Event.MFA_FAILED, reason="wrong_code")
        raise second_factor.wrong_code()
    await attempts.succeeded()
    return tokens


def _successors(resources: Resources, presented: str) -> list[tuple[str, str]]:
    """(refresh token, access token id) that follow `presented`, under each key, newest first.

    Derived, not random, so a retry within the grace can be answered with the
    very same pair without storing it; unguessable without the keys."""
    pairs = []
    for key in derived_keys(resources.settings.signing_keys.values(), "refresh successor"):
        mac = hmac.new(key, presented.encode(), hashlib.sha256).digest()
        value = mac.hex()[:43]  # as long as a first token (256 bits would be 64)
        token_id = hmac.new(key, b"jti\0" + mac, hashlib.sha256).hexdigest()[:32]
        pairs.append((value, token_id))
    return pairs


async def refresh(resources: Resources, *, refresh_token: str) -> IssuedTokens:
    """Tokens that replace a refresh token, which is spent by this call."""
    digest = opaque_token_digest(refresh_token)
    # Whole seconds: the access token's `iat` is this instant, and a retry
    # within the grace rebuilds it from the stored `used_at`.
    now = datetime.fromtimestamp(int(time.time()), UTC)
    grace = timedelta(seconds=resources.settings.refresh_reuse_grace_seconds)
    async with resources.sessions.begin() as db:
        spent = await refresh_tokens.spend_refresh_token(db, digest=digest, now=now, grace=grace)
        user = await users.get_user(db, user_id=spent.user_id) if spent.user_id else None
        successor = None
        if user is not None and user.is_active and spent.family_id and spent.used_at:
            if spent.outcome is refresh_tokens.SpendOutcome.SPENT:
                successor = await _rotate(
                    resources, db, session_id=spent.family_id, presented=refresh_token
                )
            elif spent.outcome is refresh_tokens.SpendOutcome.RETRIED:
                successor = await _stored_successor(resources, db, presented=refresh_token)
        if user is not None and spent.family_id and spent.used_at and successor is not None:
            value, token_id = successor
            return sessions.tokens_for(
                resources,
                user=user,
                session_id=spent.family_id,
                refresh_token=value,
                issued_at=int(spent.used_at.timestamp()),
                token_id=token_id,
            )
        if (
            spent.outcome is refresh_tokens.SpendOutcome.REUSED
            and spent.user_id
            and spent.family_id
        ):
            await audit.record(
                db, Event.REFRESH_REUSE, user_id=spent.user_id, session_id=spent.family_id
            )
            await sessions.end(
                resources,
                db,
                user_id=spent.user_id,
                reason="refresh_reuse",
                actor_id=None,
                only=spent.family_id,
            )
    # Outside the transaction: a detected reuse has ended the session and
    # that must be committed even though this call fails.
    raise _bad_refresh_token()


async def _rotate(
    resources: Resources, db: AsyncSession, *, session_id: uuid.UUID, presented: str
) -> tuple[str, str] | None:
    """Store the successor of a token just spent; None if the session has ended."""
    value, token_id = _successors(resources, presented)[0]
    stored = await refresh_tokens.store_successor(
        db,
        session_id=session_id,
        digest=opaque_token_digest(value),
        ttl=timedelta(seconds=resources.settings.refresh_token_ttl_seconds),
        client=clients.current(),
    )
    return (value, token_id) if stored else None


async def _stored_successor(
    resources: Resources, db: AsyncSession, *, presented: str
) -> tuple[str, str] | None:
    """The successor a token's first use stored (under whichever key made it)."""
    candidates = _successors(resources, presented)
    stored = await refresh_tokens.token_exists(
        db, digests=[opaque_token_digest(value) for value, _ in candidates]
    )
    return next((c for c in candidates if opaque_token_digest(c[0]) == stored), None)


async def log_out(resources: Resources, *, refresh_token: str) -> None:
    """End the session of `refresh_token`; nothing if there is none."""
    digest = opaque_token_digest(refresh_token)
    async with resources.sessions.begin() as db:
        found = await refresh_tokens.find_family(db, digest=digest)
        if found is not None:
            session_id, user_id = found
            await sessions.end(
                resources, db, user_id=user_id, reason="logout", actor_id=user_id, only=session_id
            )


async def change_password(
    resources: Resources, *, account: Caller, current_password: str, new_password: str
) -> None:
    """A new password for `account`, who must know the current one; ends every session."""
    if new_password == current_password:
        raise InvalidArgument(
            "the new password must differ from the current one",
            reason="PASSWORD_UNCHANGED",
            violations=[
                FieldViolation(
                    field="new_password",
                    description="must differ from the current password",
                    reason="password.unchanged",
                )
            ],
        )
    user = await throttling.caller_with_password(
        resources, account=account, password=current_password
    )
    hashed = await resources.passwords.hash(new_password)
    async with resources.sessions.begin() as db:
        await users.update_user(
            db, user_id=user.id, expected_version=None, values={"hashed_password": hashed}
        )
        await audit.record_own(db, Event.PASSWORD_CHANGED, caller=account)
        await sessions.end(
            resources, db, user_id=user.id, reason="password_changed", actor_id=user.id
        )
