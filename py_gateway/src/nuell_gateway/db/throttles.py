"""Queries on `sign_in_throttles`: one row per account (or unknown address) with recent failures."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway.db.models import SignInThrottle

# One statement, so concurrent failures serialise on the row and each one
# counts: the count restarts after a quiet window, and from the threshold on
# every failure locks the subject for base * 2^(failures - threshold), capped.
RECORD_FAILURE_SQL = text(
    """
    INSERT INTO sign_in_throttles AS t (subject, failures, last_failure_at, locked_until)
    VALUES (:subject, 1, now(), NULL)
    ON CONFLICT (subject) DO UPDATE SET
        failures = CASE
            WHEN greatest(t.last_failure_at, t.locked_until)
                 < now() - make_interval(secs => :window)
            THEN 1 ELSE t.failures + 1 END,
        last_failure_at = now()
    RETURNING failures
    """
)
LOCK_SQL = text(
    """
    UPDATE sign_in_throttles
    SET locked_until = now()
        + make_interval(secs => least(:max, :base * power(2, failures - :threshold)))
    WHERE subject = :subject AND failures >= :threshold
    RETURNING locked_until
    """
)


async def locked_until(session: AsyncSession, *, subject: str) -> datetime | None:
    """When the subject may try again, if that is still in the future."""
    result = await session.execute(
        select(SignInThrottle.locked_until).where(
            SignInThrottle.subject == subject, SignInThrottle.locked_until > func.now()
        )
    )
    return result.scalar_one_or_none()


async def record_failure(
    session: AsyncSession,
    *,
    subject: str,
    threshold: int,
    window: timedelta,
    base_delay: timedelta,
    max_delay: timedelta,
) -> None:
    params = {
        "subject": subject,
        "threshold": threshold,
        "window": window.total_seconds(),
        "base": base_delay.total_seconds(),
        "max": max_delay.total_seconds(),
    }
    await session.execute(RECORD_FAILURE_SQL, params)
    await session.execute(LOCK_SQL, params)


async def clear(session: AsyncSession, *, subject: str) -> None:
    await session.execute(delete(SignInThrottle).where(SignInThrottle.subject == subject))


async def prune(session: AsyncSession, *, quiet_for: timedelta) -> None:
    """Forget subjects with no failure and no lock for `quiet_for`."""
    await session.execute(
        delete(SignInThrottle).where(
            func.greatest(SignInThrottle.last_failure_at, SignInThrottle.locked_until)
            < func.now() - quiet_for
        )
    )
