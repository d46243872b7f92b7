"""Signing in and out: passwords checked (and rehashed), tokens issued, rotated, revoked.

Keyword-only functions over the process's `Resources`, called by the
AuthService servicer. The rules kept here:

- Login answers alike, in the same time, for an unknown email, a wrong
  password and a deactivated account: a password is always verified, against
  a dummy hash when there is no account.
- A password stored under weaker Argon2 parameters than the current ones is
  rehashed on a successful login.
- Hashing happens outside any transaction, so it never holds a pooled
  connection while the CPU works.
- Refresh tokens rotate on every use; a spent one presented again revokes its
  whole family, and that revocation is committed even though the call fails.
- Changing the password revokes every refresh token of the account.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.authz import Caller, Role, scope_string
from nuell_gateway.db import refresh_tokens, users
from nuell_gateway.db.models import User
from nuell_gateway.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
)
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_opaque_token, opaque_token_digest

TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class IssuedTokens(TypedDict):
    """What a login or a refresh hands out (the fields LoginResponse and RefreshResponse share)."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str


def _bad_credentials() -> Unauthenticated:
    # One answer for unknown email, wrong password and deactivated account.
    return Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")


def _bad_refresh_token() -> Unauthenticated:
    return Unauthenticated(
        "the refresh token is invalid, expired or revoked", reason="INVALID_REFRESH_TOKEN"
    )


async def log_in(resources: Resources, *, email: str, password: str) -> IssuedTokens:
    """Tokens of a new session for the active account that `password` opens."""
    async with resources.sessions() as session:
        user = await users.find_user_by_email(session, email=email)
    outcome = await resources.passwords.verify(user.hashed_password if user else None, password)
    if user is None or not outcome.ok or not user.is_active:
        raise _bad_credentials()
    if resources.settings.require_email_verification and not user.email_verified:
        # Only with the right password, so it tells a stranger nothing.
        raise FailedPrecondition(
            "confirm your email address first: open the link we mailed you, "
            "or ask for a new one with ResendVerification",
            reason="EMAIL_NOT_VERIFIED",
        )
    async with resources.sessions.begin() as session:
        if outcome.rehashed:
            await users.update_user(
                session,
                user_id=user.id,
                expected_version=None,
                values={"hashed_password": outcome.rehashed},
            )
        return await _issue(resources, session, user=user, family_id=uuid7())


async def refresh(resources: Resources, *, refresh_token: str) -> IssuedTokens:
    """Tokens that replace a refresh token, which is spent by this call."""
    digest = opaque_token_digest(refresh_token)
    async with resources.sessions.begin() as session:
        spent = await refresh_tokens.spend_refresh_token(session, digest=digest)
        user = (
            await users.get_user(session, user_id=spent.user_id)
            if spent.outcome is refresh_tokens.SpendOutcome.SPENT and spent.user_id
            else None
        )
        if user is not None and user.is_active and spent.family_id is not None:
            return await _issue(resources, session, user=user, family_id=spent.family_id)
    # Outside the transaction: a detected reuse has revoked the family and
    # that must be committed even though this call fails.
    raise _bad_refresh_token()


async def log_out(resources: Resources, *, refresh_token: str) -> None:
    """Revoke the session (token family) of `refresh_token`; nothing if there is none."""
    digest = opaque_token_digest(refresh_token)
    async with resources.sessions.begin() as session:
        family_id = await refresh_tokens.find_family(session, digest=digest)
        if family_id is not None:
            await refresh_tokens.revoke_family(session, family_id=family_id)


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
    user = await caller_with_password(resources, account=account, password=current_password)
    hashed = await resources.passwords.hash(new_password)
    async with resources.sessions.begin() as session:
        await users.update_user(
            session, user_id=user.id, expected_version=None, values={"hashed_password": hashed}
        )
        await refresh_tokens.revoke_all_for_user(session, user_id=user.id)


async def caller_with_password(resources: Resources, *, account: Caller, password: str) -> User:
    """The caller's account if `password` is its current one; UNAUTHENTICATED otherwise."""
    async with resources.sessions() as session:
        user = await users.get_user(session, user_id=account.user_id)
    outcome = await resources.passwords.verify(user.hashed_password if user else None, password)
    if user is None or not outcome.ok:
        raise Unauthenticated("the current password is wrong", reason="INVALID_CREDENTIALS")
    return user


async def _issue(
    resources: Resources, session: AsyncSession, *, user: User, family_id: uuid.UUID
) -> IssuedTokens:
    scopes = scope_string(Role(user.role))
    access = resources.access_tokens.issue(
        user_id=user.id, scopes=scopes, generation=user.token_generation
    )
    successor = new_opaque_token()
    await refresh_tokens.store_refresh_token(
        session,
        user_id=user.id,
        family_id=family_id,
        digest=successor.digest,
        ttl=timedelta(seconds=resources.settings.refresh_token_ttl_seconds),
    )
    return IssuedTokens(
        access_token=access.token,
        token_type=TOKEN_TYPE,
        expires_in=access.expires_in,
        refresh_token=successor.value,
        scope=scopes,
    )
