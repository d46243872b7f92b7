"""Queries on `refresh_tokens`: issue and spend (rotate). Ending a session
(db/auth_sessions.py) is what revokes its tokens."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.clients import Client
from nuell_gateway.db.models import AuthSession, RefreshToken


async def store_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    digest: bytes,
    ttl: timedelta,
) -> datetime:
    """Store a token's digest; returns when it expires."""
    now = datetime.now(UTC)
    session.add(
        RefreshToken(
            id=uuid7(),
            user_id=user_id,
            family_id=family_id,
            token_hash=digest,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    await session.flush()
    return now + ttl


# One statement: the session is touched (last use, new expiry, the client)
# and the successor stored only if the session is still live.
ROTATE_SQL = text(
    """
    WITH live AS (
        UPDATE auth_sessions
        SET last_used_at = now(), expires_at = now() + make_interval(secs => :ttl),
            user_agent = :user_agent, ip_address = :ip_address
        WHERE id = :session_id AND revoked_at IS NULL
        RETURNING id, user_id, expires_at
    )
    INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at)
    SELECT :id, user_id, id, :digest, now(), expires_at FROM live
    RETURNING id
    """
)


async def store_successor(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    digest: bytes,
    ttl: timedelta,
    client: Client,
) -> bool:
    """Store a rotated token's successor and touch its session; False if the session has ended."""
    result = await session.execute(
        ROTATE_SQL,
        {
            "session_id": session_id,
            "id": uuid7(),
            "digest": digest,
            "ttl": ttl.total_seconds(),
            "user_agent": client.user_agent,
            "ip_address": client.ip_address,
        },
    )
    return result.first() is not None


class SpendOutcome(enum.Enum):
    SPENT = "spent"
    UNKNOWN = "unknown"  # never issued, expired, or its session has ended
    RETRIED = "retried"  # spent within the reuse grace: answer with the same successor
    REUSED = "reused"  # spent before the grace: the caller ends the session


@dataclass(frozen=True, slots=True)
class SpendResult:
    outcome: SpendOutcome
    user_id: uuid.UUID | None = None
    family_id: uuid.UUID | None = None
    # When the token was spent (now, for SPENT).
    used_at: datetime | None = None


async def spend_refresh_token(
    session: AsyncSession, *, digest: bytes, now: datetime, grace: timedelta
) -> SpendResult:
    """Mark a usable token spent at `now`, atomically, so only one concurrent use wins.

    The losers of a race wait on the winner's row lock and then find it spent
    within the grace (RETRIED). A spent token presented after the grace means
    it leaked (REUSED).
    """
    spent = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == digest,
            RefreshToken.used_at.is_(None),
            RefreshToken.expires_at > func.now(),
            AuthSession.id == RefreshToken.family_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(used_at=now)
        .returning(RefreshToken.user_id, RefreshToken.family_id)
    )
    row = spent.first()
    if row is not None:
        return SpendResult(SpendOutcome.SPENT, row.user_id, row.family_id, now)

    previous = await session.execute(
        select(RefreshToken.user_id, RefreshToken.family_id, RefreshToken.used_at)
        .join(AuthSession, AuthSession.id == RefreshToken.family_id)
        .where(
            RefreshToken.token_hash == digest,
            RefreshToken.used_at.is_not(None),
            AuthSession.revoked_at.is_(None),
        )
    )
    found = previous.first()
    if found is None:
        return SpendResult(SpendOutcome.UNKNOWN)
    retried = grace > timedelta(0) and found.used_at >= now - grace
    outcome = SpendOutcome.RETRIED if retried else SpendOutcome.REUSED
    return SpendResult(outcome, found.user_id, found.family_id, found.used_at)


async def find_family(
    session: AsyncSession, *, digest: bytes
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(session id, user id) of a refresh token, spent or not."""
    result = await session.execute(
        select(RefreshToken.family_id, RefreshToken.user_id).where(
            RefreshToken.token_hash == digest
        )
    )
    row = result.first()
    return None if row is None else (row.family_id, row.user_id)


async def token_exists(session: AsyncSession, *, digests: list[bytes]) -> bytes | None:
    """Which of `digests` is a stored token of a live session, if any."""
    result = await session.execute(
        select(RefreshToken.token_hash)
        .join(AuthSession, AuthSession.id == RefreshToken.family_id)
        .where(RefreshToken.token_hash.in_(digests), AuthSession.revoked_at.is_(None))
    )
    return result.scalar_one_or_none()
