"""Per-account brute-force defence, in PostgreSQL so every replica agrees.

Every RPC that checks a password or a second factor asks `Attempts.check`
first and reports the outcome. After NUELL_LOGIN_FAILURES_BEFORE_DELAY
failures within NUELL_LOGIN_FAILURE_WINDOW_SECONDS, the account is locked
for a delay that doubles with each further failure (capped); a locked
attempt is refused with RESOURCE_EXHAUSTED and a RetryInfo, unchecked. The
subject of an address with no account is its SHA-256, counted and answered
alike, so throttling tells nobody whether an account exists.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nuell_gateway import audit
from nuell_gateway.audit import Event
from nuell_gateway.authz import Caller
from nuell_gateway.db import throttles, users
from nuell_gateway.db.models import User
from nuell_gateway.db.users import normalize_email
from nuell_gateway.errors import ResourceExhausted, Unauthenticated
from nuell_gateway.resources import Resources


@dataclass(frozen=True, slots=True)
class Attempts:
    """The password and code attempts of one account (or unknown address)."""

    resources: Resources
    subject: str
    user_id: uuid.UUID | None

    @classmethod
    def of_account(cls, resources: Resources, user_id: uuid.UUID) -> Attempts:
        return cls(resources, str(user_id), user_id)

    @classmethod
    def of_sign_in(cls, resources: Resources, user_id: uuid.UUID | None, email: str) -> Attempts:
        """The account's attempts, or those of an address with no account (its digest)."""
        if user_id is not None:
            return cls.of_account(resources, user_id)
        digest = hashlib.sha256(normalize_email(email).lower().encode()).hexdigest()
        return cls(resources, f"email:{digest}", None)

    async def check(self) -> None:
        """RESOURCE_EXHAUSTED (recorded) if the subject is locked now."""
        async with self.resources.sessions.begin() as db:
            until = await throttles.locked_until(db, subject=self.subject)
            if until is not None:
                await audit.record(db, Event.SIGN_IN_THROTTLED, user_id=self.user_id)
        if until is not None:
            wait = max((until - datetime.now(UTC)).total_seconds(), 0.001)
            raise ResourceExhausted(
                "too many failed attempts for this account; retry later",
                reason="TOO_MANY_ATTEMPTS",
                metadata={"retryAfterSeconds": f"{wait:.0f}"},
                retry_after_seconds=wait,
            )

    async def failed(self, event: Event, *, reason: str) -> None:
        """Count a failure and record it; committed, whatever the call answers."""
        settings = self.resources.settings
        async with self.resources.sessions.begin() as db:
            await throttles.record_failure(
                db,
                subject=self.subject,
                threshold=settings.login_failures_before_delay,
                window=timedelta(seconds=settings.login_failure_window_seconds),
                base_delay=timedelta(seconds=settings.login_delay_base_seconds),
                max_delay=timedelta(seconds=settings.login_delay_max_seconds),
            )
            await audit.record(db, event, user_id=self.user_id, reason=reason)

    async def succeeded(self) -> None:
        async with self.resources.sessions.begin() as db:
            await throttles.clear(db, subject=self.subject)


async def caller_with_password(resources: Resources, *, account: Caller, password: str) -> User:
    """The caller's account if `password` is its current one; UNAUTHENTICATED
    otherwise. Counted like a sign-in, so a stolen access token cannot be used
    to guess the password at machine speed."""
    attempts = Attempts.of_account(resources, account.user_id)
    await attempts.check()
    async with resources.sessions() as db:
        user = await users.get_user(db, user_id=account.user_id)
    outcome = await resources.passwords.verify(user.hashed_password if user else None, password)
    if user is None or not outcome.ok:
        await attempts.failed(Event.SIGN_IN_FAILED, reason="wrong_password")
        raise Unauthenticated("the current password is wrong", reason="INVALID_CREDENTIALS")
    await attempts.succeeded()
    return user
