"""Posts and rust_compute: analysis stored with posts, near-duplicates refused,
and no write lost while rust_compute is down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy import select, update
from sqlalchemy.engine import URL

from nuell_gateway.db import posts as post_rows
from nuell_gateway.db.models import Post
from nuell_gateway.post_analysis import backfill_once
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.reference import text_analytics as reference
from tests.utils.compute import RustCompute, free_port
from tests.utils.factories import TestUser, bearer, make_user
from tests.utils.rpc import error_details
from tests.utils.snapshot import snapshot

ORIGINAL = "I visited the old harbour this morning and the fishing boats were already back in"
REPEAT = "I visited the old harbour this morning, and the fishing boats were already back in!"


async def _create(posts: PostServiceStub, metadata: object, content: str) -> post_pb2.Post:
    reply: pb.CreatePostResponse = await posts.CreatePost(
        pb.CreatePostRequest(content=content), metadata=metadata
    )
    return reply.post


async def test_an_authors_near_duplicate_is_refused_and_nothing_is_written(
    posts: PostServiceStub, gateway: Gateway
) -> None:
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    first = await _create(posts, me, ORIGINAL)
    assert reference.jaccard(reference.shingles(ORIGINAL), reference.shingles(REPEAT)) >= 0.9
    before = await snapshot(gateway.resources.sessions)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(posts, me, REPEAT)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.error_info is not None
    assert details.error_info.reason == "NEAR_DUPLICATE"
    assert details.error_info.metadata["post_id"] == first.id
    assert await snapshot(gateway.resources.sessions) == before


async def test_someone_elses_near_duplicate_is_allowed(
    posts: PostServiceStub, gateway: Gateway
) -> None:
    alice = await make_user(gateway.resources.sessions)
    bob = await make_user(gateway.resources.sessions)
    await _create(posts, bearer(gateway.resources.access_tokens, alice), ORIGINAL)
    assert await _create(posts, bearer(gateway.resources.access_tokens, bob), REPEAT)


async def test_an_edit_into_a_near_duplicate_is_refused_but_editing_itself_is_not(
    posts: PostServiceStub, gateway: Gateway
) -> None:
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    await _create(posts, me, ORIGINAL)
    other = await _create(posts, me, "Something completely different about the weather today")
    mask = field_mask_pb2.FieldMask(paths=["content"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await posts.UpdatePost(
            pb.UpdatePostRequest(post=post_pb2.Post(id=other.id, content=REPEAT), update_mask=mask),
            metadata=me,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A small edit of a post is not a duplicate of that same post.
    tweaked = other.content + " Still sunny."
    reply = await posts.UpdatePost(
        pb.UpdatePostRequest(post=post_pb2.Post(id=other.id, content=tweaked), update_mask=mask),
        metadata=me,
    )
    assert reply.post.analysis.word_count == reference.analyze(tweaked)["word_count"]


async def test_the_window_is_configurable(database_url: URL, empty_tables: None) -> None:
    gateway = await Gateway.start(make_settings(database_url, near_duplicate_window_posts=1))
    try:
        author = await make_user(gateway.resources.sessions)
        me = bearer(gateway.resources.access_tokens, author)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = PostServiceStub(channel)
            await _create(stub, me, ORIGINAL)
            await _create(stub, me, "A newer post pushes the first one out of a window of one")
            assert await _create(stub, me, REPEAT)  # the original is outside the window now
    finally:
        await gateway.stop()


@pytest.fixture
async def gateway_with_own_compute(
    database_url: URL, empty_tables: None
) -> AsyncIterator[tuple[Gateway, RustCompute]]:
    rust = RustCompute(free_port()).start()
    gateway = await Gateway.start(
        make_settings(
            database_url,
            compute_target=rust.address,
            analysis_backfill_interval_seconds=0.2,
        )
    )
    yield gateway, rust
    await gateway.stop()
    rust.stop()


async def test_posts_written_while_compute_is_down_are_kept_and_analysed_later(
    gateway_with_own_compute: tuple[Gateway, RustCompute],
) -> None:
    gateway, rust = gateway_with_own_compute
    author: TestUser = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = PostServiceStub(channel)
        rust.kill()
        written = [await _create(stub, me, f"written while compute was down {n}") for n in range(3)]
        assert {p.analysis.state for p in written} == {post_pb2.ANALYSIS_STATE_PENDING}
        assert all(p.analysis.word_count == 0 for p in written)

        rust.start()
        ids = [uuid.UUID(p.id) for p in written]
        for _ in range(100):
            async with gateway.resources.sessions() as session:
                states = set(
                    (await session.execute(select(Post.analysis_state).where(Post.id.in_(ids))))
                    .scalars()
                    .all()
                )
            if states == {"ready"}:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"analysis not filled in: {states}")
        for post in written:
            reply = await stub.GetPost(pb.GetPostRequest(id=post.id), metadata=me)
            assert reply.post.analysis.state == post_pb2.ANALYSIS_STATE_READY
            assert reply.post.analysis.word_count == reference.analyze(post.content)["word_count"]
            # Filling in the analysis is not an edit.
            assert (reply.post.etag, reply.post.update_time) == (post.etag, post.update_time)


async def test_the_backfill_analyses_the_content_as_it_is_now(
    gateway_with_own_compute: tuple[Gateway, RustCompute],
) -> None:
    gateway, _ = gateway_with_own_compute

    author = await make_user(gateway.resources.sessions)
    async with gateway.resources.sessions.begin() as session:
        post = await post_rows.create_post(session, author_id=author.id, content="old words")
    async with gateway.resources.sessions.begin() as session:
        await session.execute(
            update(Post).where(Post.id == post.id).values(content="new words", version=2)
        )
    async with gateway.resources.sessions() as session:
        pending = {row[0] for row in await post_rows.pending_analysis(session, limit=100)}
    assert post.id in pending
    await backfill_once(gateway.resources)
    async with gateway.resources.sessions() as session:
        stored = await session.get(Post, post.id)
    assert stored is not None
    assert stored.analysis_state == "ready"
    assert stored.word_count == reference.analyze("new words")["word_count"]
