"""The audit trail: what happened to an account, by whom, from where.

Every security event is appended to `auth_events` in the transaction of
the change it records, with the call's client (clients.py). A row names
accounts, sessions and a stable reason word; never a password, code,
secret, token or email address. Rows are pruned after
NUELL_AUDIT_RETENTION_DAYS by every gateway process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import clients
from nuell_gateway.authz import Caller
from nuell_gateway.cancellation import reraise_if_cancelled
from nuell_gateway.db import audit as audit_rows
from nuell_gateway.db import second_factor as factor_rows
from nuell_gateway.db import throttles as throttle_rows
from nuell_gateway.resources import Resources

logger = logging.getLogger(__name__)

PRUNE_SECONDS = 3600.0
FIRST_PRUNE_SECONDS = 60.0


class Event(StrEnum):
    """nuell.sessions.v1.AuditEventType, as stored (models.AUTH_EVENT_TYPES)."""

    SIGN_IN_SUCCEEDED = "sign_in_succeeded"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_THROTTLED = "sign_in_throttled"
    MFA_PASSED = "mfa_passed"
    MFA_FAILED = "mfa_failed"
    REFRESH_REUSE = "refresh_reuse"
    SESSION_REVOKED = "session_revoked"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105 - an event name
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an event name
    EMAIL_VERIFIED = "email_verified"
    EMAIL_CHANGED = "email_changed"
    TOTP_ENROLLED = "totp_enrolled"
    TOTP_DISABLED = "totp_disabled"
    ROLE_CHANGED = "role_changed"
    DEACTIVATED = "deactivated"
    REACTIVATED = "reactivated"
    RECOVERY_CODE_USED = "recovery_code_used"


async def record(
    db: AsyncSession,
    event: Event,
    *,
    user_id: uuid.UUID | None,
    actor_id: uuid.UUID | None = None,
    session_id: uuid.UUID | None = None,
    reason: str = "",
) -> None:
    """Append one event, in `db`'s transaction, with the current call's client."""
    await audit_rows.append_event(
        db,
        type=str(event),
        user_id=user_id,
        actor_id=actor_id,
        session_id=session_id,
        client=clients.current(),
        reason=reason,
    )


async def record_own(db: AsyncSession, event: Event, *, caller: Caller, reason: str = "") -> None:
    """Append an event the caller caused on their own account, from their session."""
    await record(
        db,
        event,
        user_id=caller.user_id,
        actor_id=caller.user_id,
        session_id=caller.session_id,
        reason=reason,
    )


async def prune(resources: Resources) -> None:
    """Drop what is past its time: audit rows, quiet throttles, stale MFA challenges."""
    settings = resources.settings
    async with resources.sessions.begin() as db:
        await audit_rows.prune_events(db, older_than=timedelta(days=settings.audit_retention_days))
        await throttle_rows.prune(
            db, quiet_for=timedelta(seconds=settings.login_failure_window_seconds)
        )
        await factor_rows.prune_challenges(db)


async def prune_forever(resources: Resources) -> None:
    """`prune` every hour in every process (each pass is three DELETEs), the
    first a minute after start, so a start or a restart storm adds no load."""
    delay = FIRST_PRUNE_SECONDS
    while True:
        await asyncio.sleep(delay)
        delay = PRUNE_SECONDS
        try:
            await prune(resources)
        except (SQLAlchemyError, OSError) as exc:
            reraise_if_cancelled()
            logger.warning("audit retention: %s", type(exc).__name__)
