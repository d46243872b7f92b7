"""Batched reads of single posts (`hot_reads.PostReads`) against the real database."""

from __future__ import annotations

import asyncio
import uuid

import psycopg_pool
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from nuell_gateway.db import hot_reads
from nuell_gateway.db.models import Post, User
from nuell_gateway.resources import Resources
from tests.utils.factories import make_post, make_user


def batches() -> tuple[float, float]:
    """Batched reads sent so far, and the posts they asked for."""
    count = REGISTRY.get_sample_value("nuell_gateway_post_read_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("nuell_gateway_post_read_batch_size_sum") or 0.0
    return count, total


async def test_gets_made_together_are_one_query_and_each_gets_its_own_post(
    resources: Resources,
) -> None:
    author = await make_user(resources.sessions)
    ids = [
        await make_post(resources.sessions, author=author, content=f"post {n}") for n in range(5)
    ]
    unknown = uuid.uuid4()
    asked = [*ids, *ids[:3], unknown]  # repeats and a post that does not exist
    reads = hot_reads.PostReads(resources.hot_reads)
    before = batches()

    rows = await asyncio.gather(
        *(reads.get(post_id, include_inactive_authors=False) for post_id in asked)
    )

    after = batches()
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 6  # distinct ids only
    for post_id, row in zip(asked, rows, strict=True):
        if post_id == unknown:
            assert row is None
        else:
            assert row is not None
            assert row.id == str(post_id)
            assert row.content == f"post {ids.index(post_id)}"
            assert row.user_id == str(author.id)


async def test_visibility_is_per_get_even_within_one_turn(resources: Resources) -> None:
    banned = await make_user(resources.sessions, is_active=False)
    post_id = await make_post(resources.sessions, author=banned)
    reads = hot_reads.PostReads(resources.hot_reads)
    before = batches()

    hidden, moderated = await asyncio.gather(
        reads.get(post_id, include_inactive_authors=False),
        reads.get(post_id, include_inactive_authors=True),
    )

    assert hidden is None
    assert moderated is not None
    assert moderated.id == str(post_id)
    assert batches()[0] - before[0] == 2


async def test_a_get_sees_every_write_committed_before_it(resources: Resources) -> None:
    author = await make_user(resources.sessions)
    post_id = await make_post(resources.sessions, author=author, content="first")
    reads = hot_reads.PostReads(resources.hot_reads)
    first = await reads.get(post_id, include_inactive_authors=False)
    assert first is not None
    assert first.content == "first"

    async with resources.sessions.begin() as session:
        await session.execute(
            update(Post)
            .where(Post.id == post_id)
            .values(content="second", version=Post.version + 1)
        )
    second = await reads.get(post_id, include_inactive_authors=False)
    assert second is not None
    assert (second.content, second.version) == ("second", first.version + 1)

    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == author.id).values(is_active=False))
    assert await reads.get(post_id, include_inactive_authors=False) is None


async def test_a_full_batch_goes_at_once(resources: Resources) -> None:
    reads = hot_reads.PostReads(resources.hot_reads)
    asked = [uuid.uuid4() for _ in range(reads.MAX_BATCH + 20)]
    before = batches()

    rows = await asyncio.gather(
        *(reads.get(post_id, include_inactive_authors=False) for post_id in asked)
    )

    assert rows == [None] * len(asked)
    after = batches()
    assert (after[0] - before[0], after[1] - before[1]) == (2, len(asked))


async def test_a_failed_query_fails_every_get_of_its_batch(resources: Resources) -> None:
    pool = hot_reads.create_pool(resources.settings)
    await pool.open(wait=True)
    await pool.close()
    reads = hot_reads.PostReads(pool)

    results = await asyncio.gather(
        *(reads.get(uuid.uuid4(), include_inactive_authors=False) for _ in range(3)),
        return_exceptions=True,
    )

    assert all(isinstance(result, psycopg_pool.PoolClosed) for result in results)


async def test_a_caller_that_goes_away_leaves_the_others_served(resources: Resources) -> None:
    author = await make_user(resources.sessions)
    post_id = await make_post(resources.sessions, author=author)
    reads = hot_reads.PostReads(resources.hot_reads)

    leaving = asyncio.create_task(reads.get(post_id, include_inactive_authors=False))
    staying = asyncio.create_task(reads.get(post_id, include_inactive_authors=False))
    await asyncio.sleep(0)  # both are waiting on the same batch
    leaving.cancel()

    row = await staying
    assert row is not None
    assert row.id == str(post_id)
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_gets_made_while_every_query_slot_is_busy_go_together(
    resources: Resources,
) -> None:
    author = await make_user(resources.sessions)
    ids = [await make_post(resources.sessions, author=author) for _ in range(5)]
    reads = hot_reads.PostReads(resources.hot_reads)
    assert reads.MAX_QUERIES == 2
    before = batches()

    # Two visibilities: two queries, every slot taken.
    busy = [
        asyncio.create_task(reads.get(ids[0], include_inactive_authors=False)),
        asyncio.create_task(reads.get(ids[0], include_inactive_authors=True)),
    ]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the end of that turn sent them
    later = [
        asyncio.create_task(reads.get(post_id, include_inactive_authors=False)) for post_id in ids
    ]
    rows = await asyncio.gather(*busy, *later)

    assert [row.id for row in rows if row is not None] == [str(ids[0])] * 2 + [
        str(post_id) for post_id in ids
    ]
    after = batches()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 2 + 5)
