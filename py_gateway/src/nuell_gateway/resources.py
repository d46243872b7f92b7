"""What the servicers share for the life of the process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from nuell_gateway.account_states import AccountStates
from nuell_gateway.compute_client import ComputeClient
from nuell_gateway.config import Settings
from nuell_gateway.convert import use_etag_keys
from nuell_gateway.db import hot_reads
from nuell_gateway.db.engine import create_session_factory
from nuell_gateway.db.hot_reads import PostReads
from nuell_gateway.mail import Mailer
from nuell_gateway.pagination import PageTokens
from nuell_gateway.post_events import PostEventLog
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
    # Plain psycopg for the reads on every call's path (db/hot_reads.py).
    hot_reads: AsyncConnectionPool[AsyncConnection[Any]]
    post_reads: PostReads
    accounts: AccountStates
    compute: ComputeClient
    mailer: Mailer
    post_events: PostEventLog

    @classmethod
    def build(cls, settings: Settings, engine: AsyncEngine) -> Resources:
        use_etag_keys(settings.signing_keys.values())
        pool = hot_reads.create_pool(settings)
        sessions = create_session_factory(engine)
        page_tokens = PageTokens(settings.signing_keys.values())
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            passwords=Passwords(settings),
            access_tokens=AccessTokens(settings),
            page_tokens=page_tokens,
            hot_reads=pool,
            post_reads=PostReads(pool),
            accounts=AccountStates(pool, hot_reads.conninfo(settings)),
            compute=ComputeClient(settings.compute_target),
            mailer=Mailer(settings, sessions),
            post_events=PostEventLog(settings, pool, hot_reads.conninfo(settings), page_tokens),
        )

    async def open(self) -> None:
        await self.hot_reads.open(wait=False)
        self.accounts.start()
        self.post_events.start()

    async def close(self) -> None:
        await self.post_events.stop()
        await self.accounts.stop()
        await self.hot_reads.close()
        await self.compute.close()
        self.passwords.close()
        await self.engine.dispose()
