"""Accounts over email: registration, verification, password reset, email change.

Keyword-only functions over the process's `Resources`, called by the
AuthService servicer. The rules kept here (docs/security.md, "Accounts over
email"):

- Every mail is written to the outbox in the transaction that makes the
  token it carries; the sender (`mail`) delivers it later. A request never
  waits for SMTP, and never fails because SMTP is down.
- Tokens are 256 random bits, stored as SHA-256 only, bound to a purpose and
  to the address they were mailed to, single use, superseded by a newer one
  of the same purpose. Every way a token can be bad answers one error.
- Nothing tells a stranger whether an address has an account: Register,
  ResendVerification and RequestPasswordReset answer alike for every
  address, and the last two take the same time (`ANSWER_FLOOR_SECONDS`).
- Mails of one kind to one address are throttled; a throttled request
  answers as usual and sends nothing.
- A reset or an email change revokes every refresh token and moves the
  account's token generation on, which stops its access tokens at once.
- A rejected request changes nothing: its transaction rolls back, the token
  with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import audit, mail, sessions, throttling
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller
from nuell_gateway.db import one_time_tokens, outbox, throttles, users
from nuell_gateway.db.models import User
from nuell_gateway.errors import AlreadyExists, FieldViolation, InvalidArgument
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_opaque_token, opaque_token_digest

VERIFY = "verify_email"
RESET = "reset_password"
CHANGE = "change_email"
# The query parameter of each purpose's link on the browser page.
LINK_PARAMETER = {VERIFY: "verify_email", RESET: "reset_password", CHANGE: "confirm_email"}
# Requests that must not tell known from unknown addresses answer no sooner
# than this, whichever path they took; the work on either path is far less.
ANSWER_FLOOR_SECONDS = 0.15
HOUR = timedelta(hours=1)


def _token_invalid() -> InvalidArgument:
    # One answer for a used, expired, superseded, unknown or misdirected token.
    return InvalidArgument(
        "the link is invalid, expired or already used; ask for a new one",
        reason="TOKEN_INVALID",
        violations=[
            FieldViolation("token", "is invalid, expired or already used", "token.invalid")
        ],
    )


def _ttl(resources: Resources, purpose: str) -> timedelta:
    settings = resources.settings
    seconds = {
        VERIFY: settings.verify_email_ttl_seconds,
        RESET: settings.reset_password_ttl_seconds,
        CHANGE: settings.change_email_ttl_seconds,
    }[purpose]
    return timedelta(seconds=seconds)


async def _throttled(
    resources: Resources, session: AsyncSession, *, address: str, kind: str
) -> bool:
    """Whether another mail of `kind` to `address` now would break the limits.

    Locks the address and kind until the transaction ends, so two requests
    at once cannot both pass.
    """
    settings = resources.settings
    await outbox.lock_address(session, address=address, kind=kind)
    if settings.mail_throttle_seconds and await outbox.recent_count(
        session,
        address=address,
        kind=kind,
        within=timedelta(seconds=settings.mail_throttle_seconds),
    ):
        return True
    hourly = await outbox.recent_count(session, address=address, kind=kind, within=HOUR)
    return hourly >= settings.mail_throttle_per_hour


async def _queue_mail(
    resources: Resources,
    session: AsyncSession,
    *,
    kind: str,
    recipient: str,
    locale: str,
    token_for: tuple[uuid.UUID, str] | None = None,
    **values: Any,
) -> None:
    """Queue one mail in this transaction, with a new token of (account, purpose) if given.

    Nothing at all when throttled: not even a token.
    """
    if await _throttled(resources, session, address=recipient, kind=kind):
        return
    link, ttl = "", timedelta(0)
    if token_for is not None:
        user_id, purpose = token_for
        ttl = _ttl(resources, purpose)
        token = new_opaque_token()
        await one_time_tokens.store_token(
            session, user_id=user_id, purpose=purpose, email=recipient, digest=token.digest, ttl=ttl
        )
        public = resources.settings.public_url.rstrip("/")
        link = f"{public}/?{LINK_PARAMETER[purpose]}={token.value}"
    seconds = int(ttl.total_seconds())
    rendered = mail.render(
        kind,
        locale,
        email=recipient,
        link=link,
        hours=seconds // 3600,
        minutes=seconds // 60,
        **values,
    )
    await outbox.enqueue(
        session,
        kind=kind,
        recipient=recipient,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        domain=resources.mailer.domain,
    )


async def register(resources: Resources, *, email: str, password: str, locale: str) -> None:
    """A new, unverified account and its verification mail; for a taken address, a notice.

    The answer is the same either way (nothing returned, the same work: the
    password is hashed on both paths, and a mail queued on both).
    """
    hashed = await resources.passwords.hash(password)
    address = users.normalize_email(email)
    async with resources.sessions.begin() as session:
        try:
            user = await users.create_user(
                session,
                email=address,
                hashed_password=hashed,
                locale=locale or resources.settings.default_locale,
            )
        except AlreadyExists:
            owner = await users.find_user_by_email(session, email=address)
            if owner is not None and owner.is_active:
                await _queue_mail(
                    resources,
                    session,
                    kind="registration_attempt",
                    recipient=owner.email,
                    locale=owner.locale,
                    token_for=(owner.id, RESET),
                )
        else:
            await _queue_verification(resources, session, user)
    resources.mailer.wake()


async def _queue_verification(resources: Resources, session: AsyncSession, user: User) -> None:
    await _queue_mail(
        resources,
        session,
        kind=VERIFY,
        recipient=user.email,
        locale=user.locale,
        token_for=(user.id, VERIFY),
    )


async def resend_verification(resources: Resources, *, email: str) -> None:
    """A new verification mail if `email` is an active, unverified account's."""
    started = time.monotonic()
    async with resources.sessions.begin() as session:
        user = await users.find_user_by_email(session, email=email)
        if user is not None and user.is_active and not user.email_verified:
            await _queue_verification(resources, session, user)
        else:
            # The same queries as the other path (nothing is written).
            await _throttled(resources, session, address=users.normalize_email(email), kind=VERIFY)
    resources.mailer.wake()
    await _answer_no_sooner_than(started)


async def request_password_reset(resources: Resources, *, email: str) -> None:
    """A reset mail if `email` is an active account's; the same answer and time otherwise."""
    started = time.monotonic()
    async with resources.sessions.begin() as session:
        user = await users.find_user_by_email(session, email=email)
        if user is not None and user.is_active:
            await _queue_mail(
                resources,
                session,
                kind=RESET,
                recipient=user.email,
                locale=user.locale,
                token_for=(user.id, RESET),
            )
        else:
            await _throttled(resources, session, address=users.normalize_email(email), kind=RESET)
    resources.mailer.wake()
    await _answer_no_sooner_than(started)


async def _answer_no_sooner_than(started: float) -> None:
    remaining = ANSWER_FLOOR_SECONDS - (time.monotonic() - started)
    if remaining > 0:
        await asyncio.sleep(remaining)


async def verify_email(resources: Resources, *, token: str) -> None:
    """Mark the address the token was mailed to verified."""
    async with resources.sessions.begin() as session:
        user, _ = await _spend(session, token=token, purpose=VERIFY)
        if not user.email_verified:
            await users.update_user(
                session, user_id=user.id, expected_version=None, values={"email_verified": True}
            )
            await audit.record(session, Event.EMAIL_VERIFIED, user_id=user.id)


async def reset_password(resources: Resources, *, token: str, new_password: str) -> None:
    """Set a new password; ends every session and access token of the account."""
    hashed = await resources.passwords.hash(new_password)
    async with resources.sessions.begin() as session:
        user, _ = await _spend(session, token=token, purpose=RESET)
        # The mail reached the address, so it is proved as well.
        await _cut_sessions(
            resources,
            session,
            user,
            values={"hashed_password": hashed, "email_verified": True},
            event=Event.PASSWORD_RESET,
        )
        # The mailbox is proved: whatever a guesser did to the count is void.
        await throttles.clear(
            session, subject=throttling.Attempts.of_account(resources, user.id).subject
        )
    resources.accounts.evict(user.id)


async def request_email_change(
    resources: Resources, *, account: Caller, new_email: str, current_password: str
) -> None:
    """Mail a confirmation link to `new_email` and a notice to the current address."""
    user = await throttling.caller_with_password(
        resources, account=account, password=current_password
    )
    address = users.normalize_email(new_email)
    if address.lower() == user.email.lower():
        raise InvalidArgument(
            "the new email is the account's current email",
            reason="EMAIL_UNCHANGED",
            violations=[
                FieldViolation("new_email", "must differ from the current email", "email.unchanged")
            ],
        )
    async with resources.sessions.begin() as session:
        # A taken address gets nothing; the caller cannot tell (same answer).
        if await users.find_user_by_email(session, email=address) is None:
            await _queue_mail(
                resources,
                session,
                kind=CHANGE,
                recipient=address,
                locale=user.locale,
                token_for=(user.id, CHANGE),
                old_email=user.email,
            )
        await _queue_mail(
            resources,
            session,
            kind="email_change_notice",
            recipient=user.email,
            locale=user.locale,
        )
    resources.mailer.wake()


async def confirm_email_change(resources: Resources, *, token: str) -> None:
    """Make the address the token was mailed to the account's (verified) email."""
    async with resources.sessions.begin() as session:
        user, address = await _spend(session, token=token, purpose=CHANGE, bound_to_email=False)
        try:
            async with session.begin_nested():
                await _cut_sessions(
                    resources,
                    session,
                    user,
                    values={"email": address, "email_verified": True},
                    event=Event.EMAIL_CHANGED,
                )
        except IntegrityError:
            # Another account took the address since the link was sent.
            raise _token_invalid() from None
    resources.accounts.evict(user.id)


async def _spend(
    session: AsyncSession, *, token: str, purpose: str, bound_to_email: bool = True
) -> tuple[User, str]:
    """Spend a live token of `purpose`: its active account (locked) and its address.

    A token mailed to an address the account no longer has is as bad as an
    unknown one (`bound_to_email`; an email change token names the new one).
    """
    spent = await one_time_tokens.spend_token(
        session, digest=opaque_token_digest(token), purpose=purpose
    )
    if spent is None:
        raise _token_invalid()
    user = await session.get(User, spent.user_id, with_for_update=True)
    if user is None or not user.is_active:
        raise _token_invalid()
    if bound_to_email and user.email.lower() != spent.email.lower():
        raise _token_invalid()
    return user, spent.email


async def _cut_sessions(
    resources: Resources,
    session: AsyncSession,
    user: User,
    *,
    values: dict[str, Any],
    event: Event,
) -> None:
    """Apply `values`, end every session and live link, stop every access token."""
    await users.update_user(
        session,
        user_id=user.id,
        expected_version=None,
        values={**values, "token_generation": user.token_generation + 1},
    )
    await audit.record(session, event, user_id=user.id)
    await sessions.end(resources, session, user_id=user.id, reason=str(event), actor_id=None)
    await one_time_tokens.supersede_all(session, user_id=user.id)
