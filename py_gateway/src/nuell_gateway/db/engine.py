"""The async engine (psycopg 3, pooled) and the session factory."""

from __future__ import annotations

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from nuell_gateway.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    """One pooled engine per process; connections are checked before use."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # A connection that died with a database restart is replaced, not handed out.
        pool_pre_ping=True,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (we build replies from them)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def unreachable_message(url: URL, error: DBAPIError) -> str:
    """One line for an operator: where, why, what to do; never the password."""
    where = url.render_as_string(hide_password=True)
    reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    return f"cannot reach the database at {where} ({reason}): start PostgreSQL or set DATABASE_URL"
