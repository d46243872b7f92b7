"""A post's analysis and the near-duplicate rule, on top of rust_compute.

Writes never wait long for analysis and never fail because rust_compute is
down: within `compute_write_deadline_seconds` a post gets its analysis and
the near-duplicate check; if rust_compute cannot answer in time the post is
stored with its analysis PENDING and the check skipped, and the backfill
(one task per gateway worker) fills the analysis in once rust_compute is
back. See docs/posts.md.

The same answer carries the post's search index: its `tsvector` (from
rust_compute's tokens, `search_terms`) and its MinHash band keys, written in
the same statement as the analysis, so a post is searchable exactly when
its analysis is ready.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nuell.compute.v1 import compute_service_pb2 as compute_pb

from nuell_gateway.cancellation import reraise_if_cancelled
from nuell_gateway.compute_client import ComputeClient, Forwarding
from nuell_gateway.config import Settings
from nuell_gateway.db import posts
from nuell_gateway.errors import Cancelled, DeadlineExceeded, FailedPrecondition, Unavailable
from nuell_gateway.resources import Resources
from nuell_gateway.search_terms import tsvector_literal

logger = logging.getLogger(__name__)

# Failures that mean "rust_compute cannot help right now", not "bad input".
_COMPUTE_DOWN = (Unavailable, DeadlineExceeded, Cancelled)
_NEW = "new"
BACKFILL_BATCH = 50


_LOW_58 = (1 << 58) - 1


def _signed(value: int) -> int:
    """An unsigned 64-bit value as the signed bigint with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass(frozen=True, slots=True)
class Analysis:
    """The analysis columns of a post and its search index."""

    word_count: int
    reading_time_seconds: int
    simhash: int
    # A tsvector literal (search_terms.tsvector_literal).
    search_vector: str = ""
    # The unsigned band keys, key j for band j; empty when it has no shingles.
    band_keys: tuple[int, ...] = ()

    def columns(self) -> dict[str, Any]:
        return {
            "analysis_state": "ready",
            "word_count": self.word_count,
            "reading_time_seconds": self.reading_time_seconds,
            # The unsigned fingerprint goes into a signed bigint (same 64 bits).
            "simhash": _signed(self.simhash),
            "search_vector": self.search_vector,
        }

    def signed_band_keys(self) -> list[int]:
        """As stored (PostBandKey.keys): band j in the top 6 bits, its key's low 58 bits below."""
        return [_signed(j << 58 | key & _LOW_58) for j, key in enumerate(self.band_keys)]


PENDING_COLUMNS: dict[str, Any] = {
    "analysis_state": "pending",
    "word_count": None,
    "reading_time_seconds": None,
    "simhash": None,
    "search_vector": None,
}


@dataclass(frozen=True, slots=True)
class ForWrite:
    """What a write stores beside the content: its columns and its band keys (signed)."""

    columns: dict[str, Any]
    band_keys: list[int]


PENDING = ForWrite(PENDING_COLUMNS, [])


def _forwarding(settings: Settings) -> Forwarding:
    return Forwarding(seconds_left=settings.compute_write_deadline_seconds)


async def analyze(compute: ComputeClient, content: str, via: Forwarding) -> Analysis:
    reply, tokenized = await asyncio.gather(
        compute.analyze(compute_pb.AnalyzeRequest(text=content, top_k=1), via),
        compute.tokenize(compute_pb.TokenizeRequest(texts=[content], band_keys=True), via),
    )
    text = tokenized.texts[0]
    return Analysis(
        word_count=reply.analysis.word_count,
        reading_time_seconds=reply.analysis.reading_time_seconds,
        simhash=reply.analysis.simhash,
        search_vector=tsvector_literal(text.tokens),
        band_keys=tuple(text.band_keys),
    )


async def _near_duplicate_of(
    resources: Resources,
    *,
    author_id: uuid.UUID,
    content: str,
    exclude: uuid.UUID | None,
    via: Forwarding,
) -> str | None:
    """The id of a recent post by the same author that `content` nearly repeats."""
    settings = resources.settings
    since = datetime.now(UTC) - timedelta(hours=settings.near_duplicate_window_hours)
    async with resources.sessions() as session:
        recent = await posts.recent_by_author(
            session,
            author_id=author_id,
            since=since,
            limit=settings.near_duplicate_window_posts,
            exclude=exclude,
        )
    if not recent:
        return None
    reply = await resources.compute.find_near_duplicates(
        compute_pb.FindNearDuplicatesRequest(
            documents=[compute_pb.Document(id=_NEW, text=content)]
            + [compute_pb.Document(id=str(post_id), text=text) for post_id, text in recent],
            threshold=settings.near_duplicate_threshold,
        ),
        via,
    )
    for pair in reply.pairs:
        if _NEW in (pair.a, pair.b):
            return pair.b if pair.a == _NEW else pair.a
    return None


async def analysis_for_write(
    resources: Resources,
    *,
    author_id: uuid.UUID,
    content: str,
    exclude: uuid.UUID | None,
) -> ForWrite:
    """Analysis columns and band keys for a post about to be written with `content`.

    Raises FAILED_PRECONDITION (reason NEAR_DUPLICATE) when the author
    recently posted nearly the same text; returns pending columns when
    rust_compute cannot answer in time.
    """
    via = _forwarding(resources.settings)
    try:
        analysis, duplicate_of = await asyncio.gather(
            analyze(resources.compute, content, via),
            _near_duplicate_of(
                resources, author_id=author_id, content=content, exclude=exclude, via=via
            ),
        )
    except _COMPUTE_DOWN as exc:
        logger.warning(
            "analysis deferred: rust_compute did not answer",
            extra={"reason": exc.reason},
        )
        return PENDING
    if duplicate_of is not None:
        raise FailedPrecondition(
            "this post nearly repeats one of your recent posts",
            reason="NEAR_DUPLICATE",
            metadata={"post_id": duplicate_of},
        )
    return ForWrite(analysis.columns(), analysis.signed_band_keys())


async def backfill_once(resources: Resources) -> int:
    """Analyse (and index) pending and unindexed posts, oldest first; returns how many."""
    async with resources.sessions() as session:
        pending = await posts.pending_analysis(session, limit=BACKFILL_BATCH)
    filled = 0
    for post_id, content, version in pending:
        analysis = await analyze(resources.compute, content, _forwarding(resources.settings))
        async with resources.sessions.begin() as session:
            # Only if the content is still what was analysed.
            filled += await posts.set_analysis(
                session,
                post_id=post_id,
                version=version,
                columns=analysis.columns(),
                band_keys=analysis.signed_band_keys(),
            )
    return filled


async def run_backfill(resources: Resources) -> None:
    """Forever: fill in pending analyses, pausing between rounds."""
    interval = resources.settings.analysis_backfill_interval_seconds
    while True:
        try:
            filled = await backfill_once(resources)
            if filled:
                logger.info("analysis backfilled", extra={"posts": filled})
        except _COMPUTE_DOWN:
            reraise_if_cancelled()  # else still down; the next round tries again
        except Exception:
            reraise_if_cancelled()
            logger.exception("analysis backfill failed")
        await asyncio.sleep(interval)
