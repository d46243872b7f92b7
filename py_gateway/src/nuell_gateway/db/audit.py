"""Queries on `auth_events`: append, list, prune."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.clients import Client
from nuell_gateway.db.models import AuthEvent


async def append_event(
    session: AsyncSession,
    *,
    type: str,
    user_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    client: Client,
    reason: str,
) -> None:
    session.add(
        AuthEvent(
            id=uuid7(),
            type=type,
            user_id=user_id,
            actor_id=actor_id,
            session_id=session_id,
            ip_address=client.ip_address,
            user_agent=client.user_agent,
            reason=reason,
        )
    )
    await session.flush()


async def list_events(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[AuthEvent]:
    """Newest first, keyset-paged on (created_at, id)."""
    query = (
        select(AuthEvent)
        .where(AuthEvent.user_id == user_id)
        .order_by(AuthEvent.created_at.desc(), AuthEvent.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(AuthEvent.created_at, AuthEvent.id) < tuple_(*after))
    return list((await session.execute(query)).scalars())


async def prune_events(session: AsyncSession, *, older_than: timedelta) -> int:
    result = await session.execute(
        delete(AuthEvent).where(AuthEvent.created_at < func.now() - older_than)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
