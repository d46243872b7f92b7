"""Finding posts: SearchPosts and ListSimilarPosts (docs/posts.md, "Search").

Keyword-only functions over the process's `Resources`, like `posts`. The
rules kept here:

- The query is tokenised by rust_compute with the rules the posts were
  indexed with; when it is down the call is UNAVAILABLE (there is no
  second tokenizer to fall back on).
- A query with no token is INVALID_ARGUMENT (QUERY_EMPTY); more than
  `QUERY_MAX_TOKENS` tokens is INVALID_ARGUMENT (QUERY_TOO_LONG).
- Visibility as in ListPosts; a page token only continues the search it came
  from (same query, author, order and view).
- Similar posts are candidates by shared band keys, then each verified by
  exact Jaccard: no false positives.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from nuell.compute.v1 import compute_service_pb2 as compute_pb

from nuell_gateway.authz import Caller, Scope
from nuell_gateway.compute_client import Forwarding
from nuell_gateway.db import hot_reads
from nuell_gateway.db import search as search_rows
from nuell_gateway.db.hot_reads import PostRow
from nuell_gateway.db.search import Hit
from nuell_gateway.errors import FieldViolation, InvalidArgument, NotFound
from nuell_gateway.pagination import _invalid_token, page_size
from nuell_gateway.resources import Resources
from nuell_gateway.search_terms import QUERY_MAX_TOKENS, chunks, tsquery_literal

DEFAULT_PAGE_SIZE = 20
# ListSimilarPosts reads every candidate of a post with fewer than
# SIMILAR_PROBE; a crowded post's are read again without its stop bands, at
# most SIMILAR_SCAN_MAX rows sharing another band and SIMILAR_PAIR_SCAN_MAX
# sharing two stop bands (db/search.py). The page size plus
# SIMILAR_VERIFY_MARGIN sharing the most bands are compared exactly
# (1M posts: verifying 150 or 300 found the same pairs, 100 four fewer; a
# page of 20 verifies 70, the bench's recall pages of 100 verify 150).
SIMILAR_PROBE = 200
SIMILAR_SCAN_MAX = 300
SIMILAR_PAIR_SCAN_MAX = 100
SIMILAR_VERIFY_MARGIN = 50


def _bad_query(reason: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        description,
        reason=reason,
        violations=[FieldViolation(field="query", description=description, reason=reason)],
    )


async def _tsquery(resources: Resources, query: str, via: Forwarding) -> str:
    """The query as a tsquery literal, from rust_compute's tokens of its chunks."""
    pieces = chunks(query)
    if not pieces:
        raise _bad_query("QUERY_EMPTY", "the query has no letter, digit or CJK character")
    reply = await resources.compute.tokenize(
        compute_pb.TokenizeRequest(texts=[piece.text for piece in pieces]), via
    )
    phrases = [
        (list(text.tokens), piece.prefix) for text, piece in zip(reply.texts, pieces, strict=True)
    ]
    count = sum(len(tokens) for tokens, _ in phrases)
    if count == 0:
        raise _bad_query("QUERY_EMPTY", "the query has no letter, digit or CJK character")
    if count > QUERY_MAX_TOKENS:
        raise _bad_query(
            "QUERY_TOO_LONG",
            f"the query has {count} tokens; at most {QUERY_MAX_TOKENS} are searched",
        )
    return tsquery_literal(phrases)


def _timeout_ms(resources: Resources, via: Forwarding) -> int:
    """The statement timeout: the setting, or less when the caller's deadline is nearer."""
    timeout = resources.settings.search_timeout_ms
    if via.seconds_left is not None:
        timeout = min(timeout, max(1, int(via.seconds_left * 1000)))
    return timeout


def _scope(tsquery: str, author_id: uuid.UUID | None, newest: bool, moderates: bool) -> str:
    digest = hashlib.sha256(tsquery.encode()).hexdigest()[:32]
    order = "newest" if newest else "relevance"
    return f"posts.search:{digest}:{author_id or '*'}:{order}:{int(moderates)}"


def _position(
    resources: Resources, token: str, scope: str
) -> tuple[tuple[float, datetime, uuid.UUID] | None, datetime]:
    """Where the walk resumes (None: first page) and when it began."""
    if not token:
        return None, datetime.now(UTC)
    cursor = resources.page_tokens.decode(token, scope=scope)
    try:
        score = cursor["s"]
        if not isinstance(score, (int, float)):
            raise TypeError("score")
        position = (float(score), datetime.fromisoformat(cursor["t"]), uuid.UUID(cursor["id"]))
        return position, datetime.fromisoformat(cursor["a"])
    except (KeyError, TypeError, ValueError):
        raise _invalid_token() from None


async def search_posts(
    resources: Resources,
    *,
    reader: Caller,
    query: str,
    author_id: uuid.UUID | None,
    newest: bool,
    requested_page_size: int,
    page_token: str,
    via: Forwarding,
) -> tuple[Sequence[Hit], str]:
    """One page of matching posts and the next page's token."""
    limit = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    moderates = reader.has(Scope.POSTS_MODERATE)
    tsquery = await _tsquery(resources, query, via)
    scope = _scope(tsquery, author_id, newest, moderates)
    before, as_of = _position(resources, page_token, scope)
    hits = await search_rows.search_posts(
        resources.hot_reads,
        tsquery=tsquery,
        newest=newest,
        author_id=author_id,
        before=before,
        as_of=as_of,
        limit=limit + 1,  # one extra row tells whether another page exists
        include_inactive_authors=moderates,
        timeout_ms=_timeout_ms(resources, via),
    )
    page = hits[:limit]
    if len(hits) <= limit:
        return page, ""
    last = page[-1]
    cursor = {
        "s": last.score,
        "t": last.created_at.isoformat(),
        "id": last.id,
        "a": as_of.isoformat(),
    }
    return page, resources.page_tokens.encode(cursor, scope=scope)


async def list_similar_posts(
    resources: Resources,
    *,
    reader: Caller,
    post_id: uuid.UUID,
    requested_page_size: int,
    via: Forwarding,
) -> list[tuple[PostRow, float]]:
    """Visible posts at or above the similarity threshold, most similar (then newest) first."""
    limit = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    moderates = reader.has(Scope.POSTS_MODERATE)
    target = await resources.post_reads.get(post_id, include_inactive_authors=moderates)
    if target is None:
        raise NotFound(
            "no post has this id", reason="POST_NOT_FOUND", metadata={"id": str(post_id)}
        )
    candidates = await search_rows.similar_candidates(
        resources.hot_reads,
        post_id=post_id,
        probe=SIMILAR_PROBE,
        scan=SIMILAR_SCAN_MAX,
        pair_scan=SIMILAR_PAIR_SCAN_MAX,
        limit=limit + SIMILAR_VERIFY_MARGIN,
        timeout_ms=_timeout_ms(resources, via),
    )
    if not candidates:
        return []
    rows = await hot_reads.get_posts(
        resources.hot_reads, post_ids=candidates, include_inactive_authors=moderates
    )
    if not rows:
        return []
    reply = await resources.compute.compare_many(
        compute_pb.CompareManyRequest(text=target.content, others=[row.content for row in rows]),
        via,
    )
    threshold = resources.settings.similar_posts_threshold
    similar = [
        (row, jaccard)
        for row, jaccard in zip(rows, reply.jaccards, strict=True)
        if jaccard >= threshold
    ]
    similar.sort(key=lambda hit: (hit[1], hit[0].created_us, hit[0].id), reverse=True)
    return similar[:limit]
