"""Whole-database snapshots, to prove a rejected request changed nothing."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nuell_gateway.db.models import Base

# What a refused sign-in attempt writes on purpose: the failure count and its
# audit row. Tests that prove "nothing changed" leave them out and check them
# where they are the point (tests/services/test_sessions.py).
SECURITY_RECORDS = ("auth_events", "sign_in_throttles")


async def snapshot(
    sessions: async_sessionmaker[AsyncSession], *, ignoring: Collection[str] = ()
) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (but those named), in a stable order."""
    rows: dict[str, list[tuple[object, ...]]] = {}
    async with sessions() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in ignoring:
                continue
            result = await session.execute(select(table).order_by(*table.primary_key.columns))
            rows[table.name] = [tuple(row) for row in result]
    return rows
