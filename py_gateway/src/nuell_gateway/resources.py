"""What the servicers share for the life of the process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from nuell_gateway.config import Settings


@dataclass(frozen=True, slots=True)
class Resources:
    """Built once at start by `server`, handed to every servicer."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
