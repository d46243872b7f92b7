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
    " SELECT p.id, p.created_at,"
    " ts_rank(p.search_vector, %(query)s::tsquery) AS score"
    " FROM {source} JOIN users u ON u.id = p.user_id"
    f" WHERE p.search_vector @@ %(query)s::tsquery AND {_VISIBLE}{{author}}"
    " AND p.created_at <= %(as_of)s"
    " ORDER BY p.created_at DESC, p.id DESC LIMIT %(window)s), "
    # Only the page's posts are read again (by id), not the whole window.
    "page AS MATERIALIZED (SELECT r.id, r.created_at, r.score FROM recent r WHERE TRUE{after}"
    " ORDER BY r.score DESC, r.created_at DESC, r.id DESC LIMIT %(limit)s) "
    f"SELECT {_POST_COLUMNS}, r.score FROM page r JOIN posts p ON p.id = r.id "
    "ORDER BY r.score DESC, r.created_at DESC, r.id DESC"
)
_RELEVANCE_AFTER = (
    " AND (r.score, r.created_at, r.id) < (%(before_score)s::real, %(before_time)s, %(before_id)s)"
)
_NEWEST_SQL = (
    f"SELECT {_POST_COLUMNS}, 0::real AS score "  # noqa: S608
    "FROM {source} JOIN users u ON u.id = p.user_id "
    f"WHERE p.search_vector @@ %(query)s::tsquery AND {_VISIBLE}{{author}}{{after}} "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT %(limit)s"
)
_NEWEST_AFTER = " AND (p.created_at, p.id) < (%(before_time)s, %(before_id)s)"

# How a search is executed. PostgreSQL estimates a bigram phrase
# (`'レ電' <-> '電ミ'`) about 10x too rare, so left to itself it reads every
# match of a phrase in 9 % of 1M posts through the GIN index to keep the
# newest few (300 ms), and with a generic plan it walked the feed for a word
# in five posts. The gateway decides instead, from a probe: how many of the
# newest PROBE_SAMPLE posts (before the page's position) match.
#
# - WALK: ix_posts_feed newest first, each row tested, until the page (or
#   the relevance window) is full; about need / density rows.
# - BITMAP: every match from the GIN index, then sorted; about
#   density * posts rows. The subquery fence (OFFSET 0) keeps the feed
#   index out of it.
#
# WALK wins when need / d < BITMAP_ROW_COST * d * N: a walked row costs
# 1-2 us (heap in feed order), a bitmap row 2.5-5 us (phrase recheck, then
# sort) on 1M posts here. For a page of 21 among 1M posts that is a density
# above 0.32 %, for the relevance window of 2,000 above 3.2 %.
BITMAP_ROW_COST = 2.0
PROBE_SAMPLE = 1000
_SOURCE = {
    "walk": "posts p",
    "bitmap": "(SELECT * FROM posts p WHERE p.search_vector @@ %(query)s::tsquery OFFSET 0) p",
    "planner": "posts p",
}
# The probe: matches among the newest PROBE_SAMPLE posts at the position,
# how many were read, and the table's row estimate (pg_class.reltuples, kept by autovacuum).
_PROBE_SQL = (
    "SELECT count(*) FILTER (WHERE s.search_vector @@ %(query)s::tsquery), count(*),"
    " (SELECT reltuples FROM pg_class WHERE oid = 'posts'::regclass)::float8 "
    "FROM (SELECT p.search_vector FROM posts p WHERE p.created_at <= %(as_of)s{after}"
    " ORDER BY p.created_at DESC, p.id DESC LIMIT %(sample)s) s"
)
_WALK_SETTINGS = (
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_BY_AUTHOR = " AND p.user_id = %(author_id)s"

# Candidates of ListSimilarPosts: the posts that share a band key with the
# given one (GIN on post_band_keys.keys), most shared bands first. At most
# `scan` rows are read, so a key that thousands of identical short posts
# share costs a bounded scan. Key j is band j's (PostBandKey.keys), so the
# shared bands are the equal positions: 42 comparisons, not 42 x 42.
SIMILAR_CANDIDATES_SQL = (
    "SELECT c.post_id FROM post_band_keys m CROSS JOIN LATERAL ("
    " SELECT k.post_id, k.keys FROM post_band_keys k"
    " WHERE k.keys && m.keys AND k.post_id <> m.post_id LIMIT %(scan)s) c "
    "WHERE m.post_id = %(id)s "
    "ORDER BY (SELECT count(*) FROM unnest(c.keys, m.keys) AS x(a, b) WHERE a = b) DESC,"
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


def search_sql(*, newest: bool, by_author: bool, after: bool, plan: str = "planner") -> str:
    template = _NEWEST_SQL if newest else _RELEVANCE_SQL
    after_sql = _NEWEST_AFTER if newest else _RELEVANCE_AFTER
    return template.format(
        source=_SOURCE[plan],
        author=_BY_AUTHOR if by_author else "",
        after=after_sql if after else "",
    )


def probe_sql(*, after: bool) -> str:
    return _PROBE_SQL.format(after=_NEWEST_AFTER if after else "")


def choose_plan(*, matched: int, sampled: int, posts: float, need: int) -> str:
    """WALK when the density among the newest posts makes it the shorter read."""
    if matched == 0 or sampled == 0:
        return "bitmap"
    density = matched / sampled
    walk_rows = need / density
    bitmap_rows = density * max(posts, sampled)
    return "walk" if walk_rows < BITMAP_ROW_COST * bitmap_rows else "bitmap"


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
    async with _bounded(pool, timeout_ms) as connection:
        plan = "planner"  # one author's posts: the planner's estimate is close enough
        if author_id is None:
            # A newest walk continues from the page's position; a relevance
            # window is always the newest matches as of the walk's start.
            after = newest and before is not None
            probe = await connection.execute(
                probe_sql(after=after), params | {"sample": PROBE_SAMPLE}, prepare=True
            )
            matched, sampled, posts = await probe.fetchone() or (0, 0, 0.0)
            need = limit if newest else RELEVANCE_WINDOW
            plan = choose_plan(matched=matched, sampled=sampled, posts=posts, need=need)
            if plan == "walk":
                await connection.execute(_WALK_SETTINGS, prepare=True)
        sql = search_sql(
            newest=newest, by_author=author_id is not None, after=before is not None, plan=plan
        )
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
