"""The reads behind SearchPosts and ListSimilarPosts, on the hot-reads pool.

The SQL here is the SQL whose plans docs/posts.md shows. Every value is a
bound parameter; the tsquery arrives as a literal built by `search_terms`
(every lexeme quoted) and is cast, never parsed by `to_tsquery`.
"""

from __future__ import annotations

import itertools
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
# The walk as a plan: no bitmap, no full scan, and no sort by time, which is
# what keeps the planner on the feed index. Without the last, a site with many
# users and few posts was driven from the users instead (the author index
# joined to the users' key, then sorted by time): every post read for a page.
# A disabled sort still runs where nothing else can (the relevance ranking),
# priced at 10^10, and a price that high would have the query JIT-compiled
# first (0.39 s for a 25 ms query): so no JIT.
_WALK_SETTINGS = (
    "SELECT set_config('enable_bitmapscan', 'off', true),"
    " set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true),"
    " set_config('jit', 'off', true)"
)
_BY_AUTHOR = " AND p.user_id = %(author_id)s"

# Candidates of ListSimilarPosts: the posts that share a band key with the
# given one (GIN on post_band_keys.keys), each with the bands it shares as a
# bit mask (bit j: band j's key is equal; key j is band j's, so 42
# comparisons, not 42 x 42).
#
# A few keys are "stop keys": short posts made of the corpus's most frequent
# words share one band with thousands of others (9,013 of 1M posts for one
# key) that are not similar, and reading those rows was the whole p99. So
# the first read stops at `probe` rows; a post with fewer candidates has them
# all. Otherwise a band whose key is in at least 1/STOP_SHARE of the rows read
# is a stop band, and two more reads take the posts sharing any other band
# (at most `scan` rows) and those sharing two stop bands (`@>` a pair of
# them, at most `pair_scan`). What it gives up is a post that shares exactly one band, a stop band:
# a pair at Jaccard 0.5 shares exactly one of the 42 bands with probability
# 0.022 (0.0004 at 0.6; spec §13 layout, 3 rows a band), and only stop bands
# count.
BANDS = 42
STOP_SHARE = 8
# Stop bands paired with each other: every pair up to this many, beyond it
# (a cluster of copies, where nearly every key is common) consecutive pairs.
STOP_ALL_PAIRS = 4
_MASK = " | ".join(
    f"((c.keys[{j + 1}] = m.keys[{j + 1}])::int::bigint << {j})" for j in range(BANDS)
)
# The target's keys, and the GIN index forced: with the keys as literals the
# planner saw a common key's statistics (0.9 % of posts) and read the table
# in order to fill the LIMIT (320 ms).
_TARGET_KEYS_SQL = (
    "SELECT keys, set_config('enable_seqscan', 'off', true) FROM post_band_keys"
    " WHERE post_id = %(id)s"
)
_CANDIDATES_SQL = (
    f"SELECT c.post_id, {_MASK} FROM (SELECT %(keys)s::bigint[] AS keys) m "  # noqa: S608
    "CROSS JOIN LATERAL (SELECT k.post_id, k.keys FROM post_band_keys k"
    " WHERE ({where}) AND k.post_id <> %(id)s LIMIT %(scan)s) c"
)


def candidates_sql(pairs: int, *, rare: bool) -> str:
    """The candidate read: keys overlapping `rare` (when given), or containing a pair."""
    where = ["k.keys && %(rare)s::bigint[]"] if rare else []
    where += [f"k.keys @> %(pair{i})s::bigint[]" for i in range(pairs)]
    return _CANDIDATES_SQL.format(where=" OR ".join(where))


def stop_pairs(stop: list[int]) -> list[tuple[int, int]]:
    """Pairs of stop bands read with `@>`: all of them for a few, else consecutive ones."""
    if len(stop) <= STOP_ALL_PAIRS:
        return list(itertools.combinations(stop, 2))
    return list(itertools.pairwise(stop))


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


async def _masks(
    connection: AsyncConnection[Any], params: dict[str, Any], pairs: int, *, rare: bool
) -> dict[uuid.UUID, int]:
    cursor = await connection.execute(candidates_sql(pairs, rare=rare), params, prepare=True)
    return {post_id: mask for post_id, mask in await cursor.fetchall()}


async def similar_candidates(
    pool: Pool,
    *,
    post_id: uuid.UUID,
    probe: int,
    scan: int,
    pair_scan: int,
    limit: int,
    timeout_ms: int,
) -> list[uuid.UUID]:
    """Ids of posts sharing a band with `post_id`, most shared bands first (see above)."""
    async with _bounded(pool, timeout_ms) as connection:
        cursor = await connection.execute(_TARGET_KEYS_SQL, {"id": post_id}, prepare=True)
        row = await cursor.fetchone()
        if row is None:
            return []
        keys: list[int] = row[0]
        params: dict[str, Any] = {"id": post_id, "keys": keys, "rare": keys, "scan": probe}
        masks = await _masks(connection, params, 0, rare=True)
        if len(masks) >= probe:
            # Crowded: keep what was read that shares two bands, read the rest again
            # without the stop bands.
            stop = [
                band
                for band in range(len(keys))
                if STOP_SHARE * sum(mask >> band & 1 for mask in masks.values()) >= len(masks)
            ]
            masks = {other: mask for other, mask in masks.items() if mask.bit_count() >= 2}
            pairs = stop_pairs(stop)
            params |= {"rare": [key for band, key in enumerate(keys) if band not in stop]}
            if params["rare"]:
                masks |= await _masks(connection, params | {"scan": scan}, 0, rare=True)
            # Apart, so that a thousand posts sharing two common keys do not
            # crowd out the ones sharing a rarer band.
            params |= {f"pair{i}": [keys[a], keys[b]] for i, (a, b) in enumerate(pairs)}
            if pairs:
                masks |= await _masks(
                    connection, params | {"scan": pair_scan}, len(pairs), rare=False
                )
    ranked = sorted(masks.items(), key=lambda item: (item[1].bit_count(), item[0]), reverse=True)
    return [other for other, _ in ranked[:limit]]
