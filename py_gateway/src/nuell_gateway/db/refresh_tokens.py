"""Queries on `refresh_tokens`: issue, spend (rotate), revoke."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import RefreshToken


async def store_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    digest: bytes,
    ttl: timedelta,
) -> None:
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


class SpendOutcome(enum.Enum):
    SPENT = "spent"
    UNKNOWN = "unknown"  # never issued, expired or revoked
    REUSED = "reused"  # spent before: the family is now revoked


@dataclass(frozen=True, slots=True)
class SpendResult:
    outcome: SpendOutcome
    user_id: uuid.UUID | None = None
    family_id: uuid.UUID | None = None


async def spend_refresh_token(session: AsyncSession, *, digest: bytes) -> SpendResult:
    """Mark a usable token spent, atomically, so only one concurrent use wins.

    Presenting a token that was already spent means it leaked (or a client
    raced itself): every token of its family is revoked.
    """
    spent = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == digest,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > func.now(),
        )
        .values(used_at=func.now())
        .returning(RefreshToken.user_id, RefreshToken.family_id)
    )
    row = spent.first()
    if row is not None:
        return SpendResult(SpendOutcome.SPENT, user_id=row.user_id, family_id=row.family_id)

    previous = await session.execute(
        select(RefreshToken.family_id).where(
            RefreshToken.token_hash == digest, RefreshToken.used_at.is_not(None)
        )
    )
    family_id = previous.scalar_one_or_none()
    if family_id is None:
        return SpendResult(SpendOutcome.UNKNOWN)
    await revoke_family(session, family_id=family_id)
    return SpendResult(SpendOutcome.REUSED, family_id=family_id)


async def find_family(session: AsyncSession, *, digest: bytes) -> uuid.UUID | None:
    result = await session.execute(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == digest)
    )
    return result.scalar_one_or_none()


async def revoke_family(session: AsyncSession, *, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def revoke_all_for_user(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
