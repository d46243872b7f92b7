"""WatchPosts end to end: the event log, resume tokens, visibility, limits,
slow readers, shutdown, across gateway processes (docs/posts.md, "Live posts")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.engine import URL

from nuell_gateway.authz import ROLE_SCOPES, Caller, Role
from nuell_gateway.db.models import User
from nuell_gateway.errors import ResourceExhausted
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.factories import TestUser, bearer, make_post, make_user
from tests.utils.rpc import error_details

Metadata = tuple[tuple[str, str], ...]
CREATED, UPDATED, DELETED = (
    pb.POST_EVENT_TYPE_CREATED,
    pb.POST_EVENT_TYPE_UPDATED,
    pb.POST_EVENT_TYPE_DELETED,
)
HEARTBEAT, ANALYZED = pb.POST_EVENT_TYPE_HEARTBEAT, pb.POST_EVENT_TYPE_ANALYZED
QUICK = {"watch_auth_check_seconds": 0.2}


@contextlib.asynccontextmanager
async def running(database_url: URL, **overrides: Any) -> AsyncIterator[Gateway]:
    gateway = await Gateway.start(make_settings(database_url, **(QUICK | overrides)))
    try:
        yield gateway
    finally:
        await gateway.stop()


@contextlib.asynccontextmanager
async def stub_of(gateway: Gateway) -> AsyncIterator[PostServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield PostServiceStub(channel)


@contextlib.asynccontextmanager
async def watching(
    database_url: URL, me: Metadata, **overrides: Any
) -> AsyncIterator[tuple[Gateway, PostServiceStub, Any]]:
    """A gateway of its own with `overrides`, a client of it, and a stream open on it."""
    async with running(database_url, **overrides) as gateway, stub_of(gateway) as posts:
        watch = posts.WatchPosts(pb.WatchPostsRequest(), metadata=me)
        await started(watch)
        yield gateway, posts, watch
        watch.cancel()


def as_user(resources: Resources, user: TestUser) -> Metadata:
    return bearer(resources.access_tokens, user)


async def events(
    call: Any, count: int, *, heartbeats: bool = False, analyses: bool = False
) -> list[pb.PostEvent]:
    """The next `count` events of a stream. Heartbeats and analyses are skipped
    unless asked for: a post whose analysis missed its write deadline on a
    busy machine gets an ANALYZED event later, from the backfill."""
    wanted = {CREATED, UPDATED, DELETED} | ({HEARTBEAT} if heartbeats else set())
    wanted |= {ANALYZED} if analyses else set()
    found: list[pb.PostEvent] = []
    async with asyncio.timeout(15):
        while len(found) < count:
            event = await call.read()
            assert event is not grpc.aio.EOF, "the stream ended"
            if event.type in wanted:
                found.append(event)
    return found


async def ended(call: Any) -> grpc.aio.AioRpcError:
    async def drain() -> None:
        async with asyncio.timeout(15):
            while await call.read() is not grpc.aio.EOF:
                pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()
    return caught.value


async def started(call: Any) -> None:
    """Wait until the stream is registered (its headers came back, and no refusal)."""
    async with asyncio.timeout(10):
        await call.initial_metadata()
    await asyncio.sleep(0.05)  # a refusal's status comes with its headers
    assert not call.done(), await call.details()


async def test_a_stream_sees_creation_edit_and_deletion_in_order(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = as_user(resources, alice)
    watch = posts.WatchPosts(pb.WatchPostsRequest(), metadata=me)
    await started(watch)
    made = (
        await posts.CreatePost(
            pb.CreatePostRequest(content="今日は晴れ。散歩に行こう"), metadata=me
        )
    ).post
    mask = field_mask_pb2.FieldMask(paths=["content"])
    edited = made.__class__(id=made.id, content="今日は雨。家で本を読む")
    await posts.UpdatePost(pb.UpdatePostRequest(post=edited, update_mask=mask), metadata=me)
    await posts.DeletePost(pb.DeletePostRequest(id=made.id), metadata=me)

    seen = await events(watch, 3)
    assert [e.type for e in seen] == [CREATED, UPDATED, DELETED]
    assert [e.post_id for e in seen] == [made.id] * 3
    assert seen[0].post.content == "今日は晴れ。散歩に行こう"
    assert seen[0].post.author_id == str(alice.id)
    assert seen[1].post.content == "今日は雨。家で本を読む"
    assert seen[1].post.etag != seen[0].post.etag
    assert not seen[2].HasField("post")  # a deletion names the post only
    assert len({e.resume_token for e in seen}) == 3
    times = [e.event_time.ToMicroseconds() for e in seen]
    assert times == sorted(times)
    watch.cancel()


async def test_resuming_gives_every_later_event_exactly_once_on_another_process(
    database_url: URL, resources: Resources, alice: TestUser, gateway: Gateway
) -> None:
    me = as_user(resources, alice)
    async with stub_of(gateway) as posts:
        watch = posts.WatchPosts(pb.WatchPostsRequest(), metadata=me)
        await started(watch)
        for n in range(3):
            await posts.CreatePost(pb.CreatePostRequest(content=f"投稿その{n}"), metadata=me)
        first = await events(watch, 3)
        watch.cancel()
        # Written while nobody watches.
        for n in range(3, 6):
            await posts.CreatePost(pb.CreatePostRequest(content=f"投稿その{n}"), metadata=me)

    async with running(database_url) as other, stub_of(other) as elsewhere:
        resumed = elsewhere.WatchPosts(
            pb.WatchPostsRequest(resume_token=first[0].resume_token), metadata=me
        )
        later = await events(resumed, 5)
        assert [e.post.content for e in later] == [f"投稿その{n}" for n in range(1, 6)]
        # Nothing more is owed: the next thing is a new post, not a repeat.
        async with stub_of(gateway) as posts:
            await posts.CreatePost(pb.CreatePostRequest(content="最後の投稿"), metadata=me)
        (last,) = await events(resumed, 1)
        assert last.post.content == "最後の投稿"
        resumed.cancel()


async def test_concurrent_writers_are_seen_in_one_order_by_every_stream(
    posts: PostServiceStub, resources: Resources
) -> None:
    writers = [await make_user(resources.sessions) for _ in range(4)]
    watchers = [
        posts.WatchPosts(pb.WatchPostsRequest(), metadata=as_user(resources, writers[0]))
        for _ in range(2)
    ]
    for watch in watchers:
        await started(watch)

    async def write(user: TestUser) -> None:
        for n in range(10):
            content = f"{user.email} の投稿 {n}"
            await posts.CreatePost(
                pb.CreatePostRequest(content=content), metadata=as_user(resources, user)
            )

    await asyncio.gather(*(write(user) for user in writers))
    seen = [await events(watch, 40) for watch in watchers]
    ids = [[e.post_id for e in stream] for stream in seen]
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 40
    times = [e.event_time.ToMicroseconds() for e in seen[0]]
    assert times == sorted(times)  # commit order
    for user in writers:  # each writer's posts in the order written
        mine = [e.post.content for e in seen[0] if e.post.author_id == str(user.id)]
        assert mine == [f"{user.email} の投稿 {n}" for n in range(10)]
    for watch in watchers:
        watch.cancel()


async def test_author_filter_and_a_deactivated_authors_posts(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    bob = await make_user(resources.sessions)
    admin = await make_user(resources.sessions, role=Role.ADMIN)
    everyone = posts.WatchPosts(pb.WatchPostsRequest(), metadata=as_user(resources, alice))
    only_bob = posts.WatchPosts(
        pb.WatchPostsRequest(author_id=str(bob.id)), metadata=as_user(resources, alice)
    )
    moderator = posts.WatchPosts(pb.WatchPostsRequest(), metadata=as_user(resources, admin))
    for watch in (everyone, only_bob, moderator):
        await started(watch)
    await posts.CreatePost(
        pb.CreatePostRequest(content="ボブです"), metadata=as_user(resources, bob)
    )
    mine = as_user(resources, alice)
    await posts.CreatePost(pb.CreatePostRequest(content="アリスです"), metadata=mine)
    assert [e.post.content for e in await events(everyone, 2)] == ["ボブです", "アリスです"]
    assert [e.post.content for e in await events(only_bob, 1)] == ["ボブです"]
    assert [e.post.content for e in await events(moderator, 2)] == ["ボブです", "アリスです"]

    # Bob is deactivated: his next post (written straight to the table) reaches moderators only.
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == bob.id).values(is_active=False))
    await make_post(resources.sessions, author=bob, content="見えないはず")
    await posts.CreatePost(pb.CreatePostRequest(content="アリスの二つ目"), metadata=mine)
    assert [e.post.content for e in await events(everyone, 1)] == ["アリスの二つ目"]
    assert [e.post.content for e in await events(moderator, 2)] == [
        "見えないはず",
        "アリスの二つ目",
    ]
    for watch in (everyone, only_bob, moderator):
        watch.cancel()


async def test_heartbeats_carry_a_token_that_resumes_after_everything_seen(
    database_url: URL, alice: TestUser, resources: Resources
) -> None:
    me = as_user(resources, alice)
    heartbeats = {"watch_heartbeat_seconds": 0.3}
    async with watching(database_url, me, **heartbeats) as (_, posts, watch):
        await posts.CreatePost(pb.CreatePostRequest(content="心拍の前"), metadata=me)
        created, beat = await events(watch, 2, heartbeats=True)
        assert (created.type, beat.type) == (CREATED, HEARTBEAT)
        assert beat.resume_token
        assert not beat.post_id
        assert beat.event_time.seconds
        watch.cancel()
        await posts.CreatePost(pb.CreatePostRequest(content="心拍の後"), metadata=me)
        resumed = posts.WatchPosts(
            pb.WatchPostsRequest(resume_token=beat.resume_token), metadata=me
        )
        (after,) = await events(resumed, 1)
        assert after.post.content == "心拍の後"
        resumed.cancel()


async def test_bad_and_expired_resume_tokens_are_refused_by_name(
    database_url: URL, alice: TestUser, resources: Resources, posts: PostServiceStub
) -> None:
    me = as_user(resources, alice)
    for token in ("not-a-token", "eyJjIjp7InEiOjF9fQ.AAAA"):
        error = await ended(posts.WatchPosts(pb.WatchPostsRequest(resume_token=token), metadata=me))
        details = error_details(error)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details.error_info
        assert details.error_info.reason == "INVALID_RESUME_TOKEN"
        assert [v.field for v in details.violations] == ["resume_token"]
    error = await ended(posts.WatchPosts(pb.WatchPostsRequest(author_id="ボブ"), metadata=me))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    retention = {"post_events_retention_hours": 1 / 3600}  # one second
    async with watching(database_url, me, **retention) as (_, short, watch):
        await short.CreatePost(pb.CreatePostRequest(content="すぐ消える"), metadata=me)
        (event,) = await events(watch, 1)
        watch.cancel()
        await asyncio.sleep(2.1)
        request = pb.WatchPostsRequest(resume_token=event.resume_token)
        error = await ended(short.WatchPosts(request, metadata=me))
    details = error_details(error)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert details.error_info
    assert details.error_info.reason == "RESUME_TOKEN_EXPIRED"


async def test_streams_per_account_are_limited(
    database_url: URL, alice: TestUser, resources: Resources
) -> None:
    me = as_user(resources, alice)
    async with (
        running(database_url, watch_max_streams_per_user=2) as gateway,
        stub_of(gateway) as posts,
    ):
        open_ones = [posts.WatchPosts(pb.WatchPostsRequest(), metadata=me) for _ in range(2)]
        for watch in open_ones:
            await started(watch)
        await asyncio.sleep(0.2)
        error = await ended(posts.WatchPosts(pb.WatchPostsRequest(), metadata=me))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(error).error_info.reason == "TOO_MANY_WATCHERS"  # type: ignore[union-attr]
        # Another account is not counted against this one.
        bob = as_user(resources, await make_user(resources.sessions))
        other = posts.WatchPosts(pb.WatchPostsRequest(), metadata=bob)
        await started(other)
        await posts.CreatePost(pb.CreatePostRequest(content="まだ大丈夫"), metadata=me)
        assert len(await events(other, 1)) == 1
        for watch in [*open_ones, other]:
            watch.cancel()


async def test_a_slow_reader_is_cut_off_with_its_token_while_a_fast_one_keeps_pace(
    database_url: URL, alice: TestUser, resources: Resources
) -> None:
    async with running(database_url, watch_buffer_events=5) as gateway:
        log = gateway.resources.post_events
        me = as_user(resources, alice)
        who = Caller(
            user_id=alice.id,
            role=Role.USER,
            session_id=alice.session_id,
            scopes=ROLE_SCOPES[Role.USER],
        )

        async def still_allowed() -> Caller:
            return who

        def stream(token: str = "") -> Any:
            return log.watch(who, author_id="", resume_token=token, still_allowed=still_allowed)

        def ended_too_slow() -> float:
            labels = {"reason": "WATCHER_TOO_SLOW"}
            return REGISTRY.get_sample_value("nuell_gateway_watch_ended_total", labels) or 0.0

        cut_before = ended_too_slow()
        slow, fast = stream(), stream()
        async with stub_of(gateway) as posts:
            first = asyncio.ensure_future(anext(slow))
            fast_reader = asyncio.ensure_future(_collect(fast, 21))
            await asyncio.sleep(0.3)
            for n in range(21):
                await posts.CreatePost(pb.CreatePostRequest(content=f"連投 {n}"), metadata=me)
            got = await asyncio.wait_for(first, 10)  # the slow one read one event, then stopped
            assert [e.post.content for e in await asyncio.wait_for(fast_reader, 15)] == [
                f"連投 {n}" for n in range(21)
            ]
            with pytest.raises(ResourceExhausted) as cut:
                await asyncio.wait_for(anext(slow), 10)
            assert cut.value.reason == "WATCHER_TOO_SLOW"
            assert ended_too_slow() == cut_before + 1  # operators see it on /metrics
            # Its token resumes right after the one event it did read.
            again = stream(cut.value.metadata["resumeToken"])
            rest = await asyncio.wait_for(_collect(again, 20), 10)
            assert [e.post.content for e in [got, *rest]] == [f"連投 {n}" for n in range(21)]
            await again.aclose()
            await fast.aclose()
            await slow.aclose()


async def _collect(stream: Any, count: int) -> list[pb.PostEvent]:
    found = []
    async for event in stream:
        if event.type == CREATED:
            found.append(event)
        if len(found) == count:
            return found
    return found


async def test_shutdown_ends_streams_with_a_token_that_loses_nothing(
    database_url: URL, alice: TestUser, resources: Resources, gateway: Gateway
) -> None:
    me = as_user(resources, alice)
    async with watching(database_url, me) as (leaving, posts, watch):
        await posts.CreatePost(pb.CreatePostRequest(content="停止の前"), metadata=me)
        await events(watch, 1)
        stopping = asyncio.ensure_future(leaving.stop())
        error = await ended(watch)
        await stopping
    details = error_details(error)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert details.error_info
    assert details.error_info.reason == "SHUTTING_DOWN"
    token = details.error_info.metadata["resumeToken"]
    async with stub_of(gateway) as posts:
        await posts.CreatePost(pb.CreatePostRequest(content="停止の後"), metadata=me)
        resumed = posts.WatchPosts(pb.WatchPostsRequest(resume_token=token), metadata=me)
        (event,) = await events(resumed, 1)
        assert event.post.content == "停止の後"
        resumed.cancel()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda user: {"is_active": False}, id="deactivated"),
        pytest.param(lambda user: {"token_generation": User.token_generation + 1}, id="revoked"),
    ],
)
async def test_a_stream_ends_soon_after_its_account_or_token_stops_being_good(
    posts: PostServiceStub,
    resources: Resources,
    alice: TestUser,
    change: Callable[[TestUser], dict[str, Any]],
) -> None:
    watch = posts.WatchPosts(pb.WatchPostsRequest(), metadata=as_user(resources, alice))
    await started(watch)
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(**change(alice)))
    resources.accounts.evict(alice.id)
    error = await ended(watch)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_analysis_that_lands_later_is_an_event_of_its_own(
    database_url: URL, alice: TestUser, resources: Resources
) -> None:
    me = as_user(resources, alice)
    backfill = {"analysis_backfill_interval_seconds": 0.2}
    async with watching(database_url, me, **backfill) as (_, _, watch):
        # Written as if rust_compute had been down: no analysis yet.
        post_id = await make_post(resources.sessions, author=alice, content="後で分析される投稿")
        created, analyzed = await events(watch, 2, analyses=True)
        watch.cancel()
    assert (created.type, analyzed.type) == (CREATED, ANALYZED)
    assert created.post_id == analyzed.post_id == str(post_id)
    assert created.post.analysis.state == post_pb2.ANALYSIS_STATE_PENDING
    assert analyzed.post.analysis.state == post_pb2.ANALYSIS_STATE_READY
    assert analyzed.post.analysis.word_count > 0


async def test_streams_per_process_are_limited_whoever_opens_them(
    database_url: URL, resources: Resources
) -> None:
    people = [as_user(resources, await make_user(resources.sessions)) for _ in range(3)]
    async with running(database_url, watch_max_streams=2) as gateway, stub_of(gateway) as posts:
        first, second = (posts.WatchPosts(pb.WatchPostsRequest(), metadata=m) for m in people[:2])
        for watch in (first, second):
            await started(watch)
        error = await ended(posts.WatchPosts(pb.WatchPostsRequest(), metadata=people[2]))
        details = error_details(error)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.error_info
        assert details.error_info.reason == "TOO_MANY_WATCHERS"
        assert details.error_info.metadata["limit"] == "2"
        # A closed stream frees its place.
        first.cancel()
        await asyncio.sleep(0.3)
        third = posts.WatchPosts(pb.WatchPostsRequest(), metadata=people[2])
        await started(third)
        for watch in (second, third):
            watch.cancel()
