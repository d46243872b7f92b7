"""Queries on `one_time_tokens`: issue (superseding the live one), spend."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Update, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import OneTimeToken


async def store_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    purpose: str,
    email: str,
    digest: bytes,
    ttl: timedelta,
) -> None:
    """A new live token; the account's earlier live token of this purpose is superseded."""
    await session.execute(_supersede(user_id).where(OneTimeToken.purpose == purpose))
    now = datetime.now(UTC)
    session.add(
        OneTimeToken(
            id=uuid7(),
            user_id=user_id,
            purpose=purpose,
            token_hash=digest,
            email=email,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    await session.flush()


@dataclass(frozen=True, slots=True)
class SpentToken:
    user_id: uuid.UUID
    email: str


async def spend_token(session: AsyncSession, *, digest: bytes, purpose: str) -> SpentToken | None:
    """Mark a live, unexpired token of `purpose` used; None if there is none.

    One UPDATE: of two transactions spending the same token, the second
    waits on the row lock and then no longer matches, so exactly one wins.
    """
    result = await session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == digest,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.superseded_at.is_(None),
            OneTimeToken.expires_at > func.now(),
        )
        .values(used_at=func.now())
        .returning(OneTimeToken.user_id, OneTimeToken.email)
    )
    row = result.first()
    return None if row is None else SpentToken(user_id=row.user_id, email=row.email)


async def supersede_all(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """Close every live token of the account (its email or password just changed)."""
    await session.execute(_supersede(user_id))


def _supersede(user_id: uuid.UUID) -> Update:
    return (
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.superseded_at.is_(None),
        )
        .values(superseded_at=func.now())
    )
