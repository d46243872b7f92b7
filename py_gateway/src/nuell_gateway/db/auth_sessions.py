"""Queries on `auth_sessions`: start, end, list (a refresh touches it in db/refresh_tokens.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway.clients import Client
from nuell_gateway.db.models import AuthSession


async def start_session(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    expires_at: datetime,
    client: Client,
) -> None:
    session.add(
        AuthSession(
            id=session_id,
            user_id=user_id,
            expires_at=expires_at,
            user_agent=client.user_agent,
            ip_address=client.ip_address,
        )
    )
    await session.flush()


async def end_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: str,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """End the account's live sessions (just `only`, or all but `keep`); the ids ended."""
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if only is not None:
        query = query.where(AuthSession.id == only)
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    result = await session.execute(
        query.values(revoked_at=func.now(), revoke_reason=reason).returning(AuthSession.id)
    )
    return list(result.scalars())


async def get_session(session: AsyncSession, *, session_id: uuid.UUID) -> AuthSession | None:
    return await session.get(AuthSession, session_id)


async def list_live_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[AuthSession]:
    """Newest sign-in first, keyset-paged on (created_at, id); ended and expired left out."""
    query = (
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > func.now(),
        )
        .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(AuthSession.created_at, AuthSession.id) < tuple_(*after))
    return list((await session.execute(query)).scalars())
