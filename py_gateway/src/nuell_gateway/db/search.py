"""The reads behind SearchPosts and ListSimilarPosts, on the hot-reads pool.

The SQL here is the SQL whose plans docs/posts.md shows. Every value is a
bound parameter; the tsquery arrives as a literal built by `search_terms`
(every lexeme quoted) and is cast, never parsed by `to_tsquery`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from nuell_gateway.db.hot_reads import _POST_COLUMNS, _VISIBLE, PostRow
from nuell_gateway.errors import DeadlineExceeded

Pool = AsyncConnectionPool[AsyncConnection[Any]]

# Best match first among the newest RELEVANCE_WINDOW matches that existed
# when the walk began (`as_of`, carried by the page token): ranking every
# match of a word in half the posts costs a second, ranking 2,000 a few
# milliseconds. ts_rank is a real (float4), so the cursor carries the exact
# value and the keyset condition compares it as one.
RELEVANCE_WINDOW = 2000
_RELEVANCE_SQL = (
    "WITH recent AS MATERIALIZED ("  # noqa: S608
    " SELECT p.id FROM posts p JOIN users u ON u.id = p.user_id"
    f" WHERE p.search_vector @@ %(query)s::tsquery AND {_VISIBLE}{{author}}"
    " AND p.created_at <= %(as_of)s"
    " ORDER BY p.created_at DESC, p.id DESC LIMIT %(window)s) "
    f"SELECT {_POST_COLUMNS}, ts_rank(p.search_vector, %(query)s::tsquery) AS score "
    "FROM recent r JOIN posts p ON p.id = r.id "
    "WHERE TRUE{after} "
    "ORDER BY score DESC, p.created_at DESC, p.id DESC LIMIT %(limit)s"
)
_RELEVANCE_AFTER = (
    " AND (ts_rank(p.search_vector, %(query)s::tsquery), p.created_at, p.id)"
    " < (%(before_score)s::real, %(before_time)s, %(before_id)s)"
)
# Newest first: the planner walks ix_posts_feed and filters when the query
# is common, or reads the GIN matches and sorts them when it is rare.
_NEWEST_SQL = (
    f"SELECT {_POST_COLUMNS}, 0::real AS score "  # noqa: S608
    "FROM posts p JOIN users u ON u.id = p.user_id "
    f"WHERE p.search_vector @@ %(query)s::tsquery AND {_VISIBLE}{{author}}{{after}} "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT %(limit)s"
)
_NEWEST_AFTER = " AND (p.created_at, p.id) < (%(before_time)s, %(before_id)s)"
_BY_AUTHOR = " AND p.user_id = %(author_id)s"

# Candidates of ListSimilarPosts: the posts that share a band key with the
# given one (GIN on post_band_keys.keys), most shared bands first. At most
# `scan` rows are read, so a key that thousands of identical short posts
# share costs a bounded scan.
SIMILAR_CANDIDATES_SQL = (
    "SELECT c.post_id FROM post_band_keys m CROSS JOIN LATERAL ("
    " SELECT k.post_id, k.keys FROM post_band_keys k"
    " WHERE k.keys && m.keys AND k.post_id <> m.post_id LIMIT %(scan)s) c "
    "WHERE m.post_id = %(id)s "
    "ORDER BY (SELECT count(*) FROM unnest(c.keys) AS x WHERE x = ANY(m.keys)) DESC,"
    " c.post_id DESC LIMIT %(limit)s"
)


class Hit(NamedTuple):
    """A matching post and its score."""

    post: PostRow
    score: float

    @property
    def created_at(self) -> datetime:
        return self.post.created_at

    @property
    def id(self) -> str:
        return self.post.id


@asynccontextmanager
async def _bounded(pool: Pool, timeout_ms: int) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection in a transaction whose statements stop after `timeout_ms`.

    SET LOCAL (set_config(..., true)) ends with the transaction, so the
    pooled connection goes back with the server's own timeout. A query
    stopped by it is DEADLINE_EXCEEDED with reason SEARCH_TIMEOUT: the
    caller asked for something this server will not finish in time, which
    is neither a bug (INTERNAL) nor a database outage (UNAVAILABLE).
    """
    async with pool.connection() as connection:
        try:
            async with connection.transaction():
                await connection.execute(
                    "SELECT set_config('statement_timeout', %s, true)", (f"{timeout_ms}ms",)
                )
                yield connection
        except errors.QueryCanceled:
            raise DeadlineExceeded(
                f"the search did not finish within {timeout_ms} ms",
                reason="SEARCH_TIMEOUT",
                metadata={"timeout_ms": str(timeout_ms)},
            ) from None


def search_sql(*, newest: bool, by_author: bool, after: bool) -> str:
    template = _NEWEST_SQL if newest else _RELEVANCE_SQL
    after_sql = _NEWEST_AFTER if newest else _RELEVANCE_AFTER
    return template.format(author=_BY_AUTHOR if by_author else "", after=after_sql if after else "")


async def search_posts(
    pool: Pool,
    *,
    tsquery: str,
    newest: bool,
    author_id: uuid.UUID | None,
    before: tuple[float, datetime, uuid.UUID] | None,
    as_of: datetime,
    limit: int,
    include_inactive_authors: bool,
    timeout_ms: int,
) -> list[Hit]:
    """Matching posts in the requested order, after `before` (score, created_at, id)."""
    params: dict[str, Any] = {
        "query": tsquery,
        "include_inactive": include_inactive_authors,
        "limit": limit,
        "author_id": author_id,
        "as_of": as_of,
        "window": RELEVANCE_WINDOW,
    }
    if before is not None:
        params["before_score"], params["before_time"], params["before_id"] = before
    sql = search_sql(newest=newest, by_author=author_id is not None, after=before is not None)
    async with _bounded(pool, timeout_ms) as connection:
        # Not prepared: a generic plan cannot see how rare the query's words
        # are, and would walk the feed index for a word in five posts.
        cursor = await connection.execute(sql, params, prepare=False)
        rows = await cursor.fetchall()
    return [Hit(PostRow(*row[:-1]), float(row[-1])) for row in rows]


async def similar_candidates(
    pool: Pool, *, post_id: uuid.UUID, scan: int, limit: int, timeout_ms: int
) -> list[uuid.UUID]:
    """Ids of the posts sharing a band key with `post_id`, most shared bands first."""
    async with _bounded(pool, timeout_ms) as connection:
        cursor = await connection.execute(
            SIMILAR_CANDIDATES_SQL,
            {"id": post_id, "scan": scan, "limit": limit},
            prepare=True,
        )
        return [row[0] for row in await cursor.fetchall()]
