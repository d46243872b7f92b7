"""The reads on every call's path, in plain psycopg 3 over its own pool.

The account lookup behind every authenticated call, GetPost and ListPosts
run many times a second. Through an SQLAlchemy session each costs about
0.3-0.8 ms of CPU (session, pool and result machinery, plus BEGIN/ROLLBACK
round trips), several times the query itself; on psycopg's pool in
autocommit, with prepared statements, about 0.07 ms (figures in
docs/posts.md). Everything else, and every write, goes through SQLAlchemy.
The SQL here is the SQL whose plans docs/posts.md shows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from psycopg.rows import args_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from nuell_gateway.config import Settings

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

ACCOUNT_STATE_SQL = "SELECT role, is_active FROM users WHERE id = %(id)s"
# Composed from the constant fragments above only; every value is a bound
# parameter.
GET_POST_SQL = (
    f"SELECT {_POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id "  # noqa: S608
    f"WHERE p.id = %(id)s AND {_VISIBLE}"
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
) -> tuple[str, bool] | None:
    """(role, is_active) of an account, read fresh on every call."""
    async with pool.connection() as connection:
        cursor = await connection.execute(ACCOUNT_STATE_SQL, {"id": user_id}, prepare=True)
        row = await cursor.fetchone()
    return None if row is None else (row[0], row[1])


async def get_post(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    *,
    post_id: uuid.UUID,
    include_inactive_authors: bool,
) -> PostRow | None:
    async with pool.connection() as connection:
        cursor = connection.cursor(row_factory=args_row(PostRow))
        await cursor.execute(
            GET_POST_SQL,
            {"id": post_id, "include_inactive": include_inactive_authors},
            prepare=True,
        )
        return await cursor.fetchone()


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
