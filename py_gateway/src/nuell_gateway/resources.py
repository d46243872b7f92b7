"""What the servicers share for the life of the process."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from nuell_gateway.config import Settings
from nuell_gateway.db.engine import create_session_factory
from nuell_gateway.pagination import PageTokens
from nuell_gateway.security.passwords import Passwords
from nuell_gateway.security.tokens import AccessTokens


@dataclass(frozen=True, slots=True)
class Resources:
    """Built once at start by `server`, handed to every servicer."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    passwords: Passwords
    access_tokens: AccessTokens
    page_tokens: PageTokens

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine) -> Resources:
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            passwords=Passwords(settings),
            access_tokens=AccessTokens(settings),
            page_tokens=PageTokens(settings.signing_keys.values()),
        )

    async def close(self) -> None:
        self.passwords.close()
        await self.engine.dispose()
