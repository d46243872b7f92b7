"""The reads on every call's path, in plain psycopg 3 over its own pool.

The account lookup behind every authenticated call, GetPost, ListPosts and
the reads of one account (GetCurrentUser, GetUser) run many times a second.
Through an SQLAlchemy session each costs about 0.3-0.8 ms of CPU (session,
pool and result machinery, plus BEGIN/ROLLBACK round trips), several times
the query itself; on psycopg's pool in autocommit, with prepared
statements, about 0.07 ms (figures in docs/posts.md). Everything else, and
every write, goes through SQLAlchemy.
The SQL here is the SQL whose plans docs/posts.md shows.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from psycopg.rows import args_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from nuell_gateway.config import Settings
from nuell_gateway.metrics import POST_READ_BATCH

# Ids as text and times as whole microseconds since the epoch: what the
# reply carries, so no UUID or datetime object is built per row (a page of
# 50 converts in half the time). extract() is exact (numeric) since PG 14.
_POST_COLUMNS = (
    "p.id::text, p.user_id::text, p.content, "
    "(extract(epoch FROM p.created_at) * 1000000)::int8, "
    "(extract(epoch FROM p.updated_at) * 1000000)::int8, p.version, "
    "p.analysis_state, p.word_count, p.reading_time_seconds, p.simhash"
)
# Posts of deactivated authors are hidden unless the caller moderates.
_VISIBLE = "(%(include_inactive)s OR u.is_active)"

SESSION_LIVE_SQL = """
SELECT 1 FROM auth_sessions WHERE id = %(id)s AND user_id = %(user_id)s AND revoked_at IS NULL
"""
ACCOUNT_STATE_SQL = "SELECT role, is_active, token_generation FROM users WHERE id = %(id)s"
# Everything a User reply carries; never the password hash.
GET_USER_SQL = (
    "SELECT id::text, email, display_name, role, is_active, "
    "(extract(epoch FROM created_at) * 1000000)::int8, "
    "(extract(epoch FROM updated_at) * 1000000)::int8, version, email_verified, locale, "
    "totp_enabled FROM users WHERE id = %(id)s"
)
# Composed from the constant fragments above only; every value is a bound
# parameter.
# The posts asked for at the same moment, in one query (`PostReads`).
GET_POSTS_SQL = (
    f"SELECT {_POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id "  # noqa: S608
    f"WHERE p.id = ANY(%(ids)s) AND {_VISIBLE}"
)
# Newest first on ix_posts_feed / ix_posts_author_feed. The keyset condition
# is a row comparison: PostgreSQL uses only that form as an index condition.
_LIST_POSTS_SQL = (
    f"SELECT {_POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id "  # noqa: S608
    f"WHERE {_VISIBLE}{{author}}{{after}} "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT %(limit)s"
)
_BY_AUTHOR = " AND p.user_id = %(author_id)s"
_AFTER = " AND (p.created_at, p.id) < (%(before_time)s, %(before_id)s)"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PostRow(NamedTuple):
    """A post as read here, in the columns' order (`_POST_COLUMNS`)."""

    id: str
    user_id: str
    content: str
    created_us: int  # microseconds since the Unix epoch
    updated_us: int
    version: int
    analysis_state: str
    word_count: int | None
    reading_time_seconds: int | None
    simhash: int | None

    @property
    def created_at(self) -> datetime:
        """The keyset position (page tokens), exactly."""
        return EPOCH + timedelta(microseconds=self.created_us)


class UserRow(NamedTuple):
    """An account as read here, in GET_USER_SQL's columns' order."""

    id: str
    email: str
    display_name: str
    role: str
    is_active: bool
    created_us: int  # microseconds since the Unix epoch
    updated_us: int
    version: int
    email_verified: bool
    locale: str
    totp_enabled: bool


def conninfo(settings: Settings) -> str:
    """The database URL as libpq takes it."""
    url: URL = settings.sqlalchemy_url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def create_pool(settings: Settings) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """A pool of autocommit connections (reads need no transaction)."""
    return AsyncConnectionPool(
        conninfo(settings),
        min_size=1,
        max_size=settings.db_pool_size,
        timeout=settings.db_pool_timeout_seconds,
        kwargs={"autocommit": True},
        open=False,
        name="hot-reads",
    )


async def account_state(
    pool: AsyncConnectionPool[AsyncConnection[Any]], *, user_id: uuid.UUID
) -> tuple[str, bool, int] | None:
    """(role, is_active, token_generation) of an account, read fresh on every call."""
    async with pool.connection() as connection:
        cursor = await connection.execute(ACCOUNT_STATE_SQL, {"id": user_id}, prepare=True)
        row = await cursor.fetchone()
    return None if row is None else (row[0], row[1], row[2])


async def session_is_live(
    pool: AsyncConnectionPool[AsyncConnection[Any]], *, session_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    """Whether the session exists for this account and has not been ended."""
    async with pool.connection() as connection:
        cursor = await connection.execute(
            SESSION_LIVE_SQL, {"id": session_id, "user_id": user_id}, prepare=True
        )
        return await cursor.fetchone() is not None


async def get_user(
    pool: AsyncConnectionPool[AsyncConnection[Any]], *, user_id: uuid.UUID
) -> UserRow | None:
    """The account with this id, active or not; None if there is none."""
    async with pool.connection() as connection:
        cursor = connection.cursor(row_factory=args_row(UserRow))
        await cursor.execute(GET_USER_SQL, {"id": user_id}, prepare=True)
        return await cursor.fetchone()


async def get_posts(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    *,
    post_ids: list[uuid.UUID],
    include_inactive_authors: bool,
) -> list[PostRow]:
    """Those of `post_ids` that exist and are visible, in no particular order."""
    async with pool.connection() as connection:
        cursor = connection.cursor(row_factory=args_row(PostRow))
        await cursor.execute(
            GET_POSTS_SQL,
            {"ids": post_ids, "include_inactive": include_inactive_authors},
            prepare=True,
        )
        return await cursor.fetchall()


class PostReads:
    """Reads of single posts by id, batched under load.

    Each query has a fixed cost (a pooled connection, a round trip, event
    loop wake-ups) that outweighs the row it reads. At most `MAX_QUERIES`
    of these reads are in flight per process: a get made while a slot is
    free goes at the end of the current event-loop turn (with any other get
    of that turn), and the gets made while both are busy wait for one to
    finish and then go together, as one `id = ANY(...)` query per
    visibility. Idle, a get costs one query and no wait; busy, one query
    serves many. Nothing is remembered between queries: a get sees every
    write committed before it was made.
    """

    MAX_QUERIES = 2
    MAX_BATCH = 100

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        self._pool = pool
        # Per visibility (include_inactive_authors): post id -> its waiters.
        self._waiting: dict[bool, dict[uuid.UUID, list[asyncio.Future[PostRow | None]]]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dispatch_due = False

    async def get(self, post_id: uuid.UUID, *, include_inactive_authors: bool) -> PostRow | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PostRow | None] = loop.create_future()
        waiting = self._waiting.setdefault(include_inactive_authors, {})
        waiting.setdefault(post_id, []).append(future)
        if len(self._in_flight) < self.MAX_QUERIES and not self._dispatch_due:
            # At the end of this turn, so gets made in the same turn go together.
            self._dispatch_due = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        """Send waiting gets while query slots are free."""
        self._dispatch_due = False
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._in_flight) < self.MAX_QUERIES:
            include_inactive = next(iter(self._waiting))
            waiting = self._waiting[include_inactive]
            batch = {post_id: waiting.pop(post_id) for post_id in list(waiting)[: self.MAX_BATCH]}
            if not waiting:
                del self._waiting[include_inactive]
            query = loop.create_task(self._load(include_inactive, batch))
            self._in_flight.add(query)
            query.add_done_callback(self._finished)

    def _finished(self, query: asyncio.Task[None]) -> None:
        self._in_flight.discard(query)
        if self._waiting:
            self._dispatch()

    async def _load(
        self,
        include_inactive: bool,
        batch: dict[uuid.UUID, list[asyncio.Future[PostRow | None]]],
    ) -> None:
        POST_READ_BATCH.observe(len(batch))
        try:
            rows = await get_posts(
                self._pool, post_ids=list(batch), include_inactive_authors=include_inactive
            )
        except BaseException as exc:
            failed = isinstance(exc, Exception)
            for futures in batch.values():
                for future in futures:
                    if future.done():
                        continue
                    if failed:
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if not failed:
                raise  # cancelled (shutdown): the waiters were told
            return
        found = {row.id: row for row in rows}
        for post_id, futures in batch.items():
            row = found.get(str(post_id))
            for future in futures:
                if not future.done():  # its caller went away
                    future.set_result(row)


def list_posts_sql(*, by_author: bool, after: bool) -> str:
    return _LIST_POSTS_SQL.format(
        author=_BY_AUTHOR if by_author else "", after=_AFTER if after else ""
    )


async def list_posts(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    *,
    author_id: uuid.UUID | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    include_inactive_authors: bool,
) -> list[PostRow]:
    """Newest first; `before` is the (created_at, id) of the previous page's last post."""
    params: dict[str, Any] = {
        "include_inactive": include_inactive_authors,
        "limit": limit,
        "author_id": author_id,
    }
    if before is not None:
        params["before_time"], params["before_id"] = before
    sql = list_posts_sql(by_author=author_id is not None, after=before is not None)
    async with pool.connection() as connection:
        cursor = connection.cursor(row_factory=args_row(PostRow))
        await cursor.execute(sql, params, prepare=True)
        return await cursor.fetchall()
