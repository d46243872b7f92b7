"""PostService end to end: ownership, limits, keyset paging, etags under concurrency."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy import select, update

from nuell_gateway.authz import Role
from nuell_gateway.db.models import Post, User
from nuell_gateway.resources import Resources
from tests.reference import text_analytics as reference
from tests.utils.factories import TestUser, bearer, make_post, make_user
from tests.utils.rpc import error_details
from tests.utils.samples import SOME_ID
from tests.utils.snapshot import snapshot

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def admin(resources: Resources) -> TestUser:
    return await make_user(resources.sessions, role=Role.ADMIN)


def _as(resources: Resources, user: TestUser) -> Metadata:
    return bearer(resources.access_tokens, user)


def _content_mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths or ["content"]))


async def _rejected(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def _create(posts: PostServiceStub, metadata: Metadata, content: str) -> post_pb2.Post:
    reply: pb.CreatePostResponse = await posts.CreatePost(
        pb.CreatePostRequest(content=content), metadata=metadata
    )
    return reply.post


async def _walk(
    posts: PostServiceStub, metadata: Metadata, page_size: int, author_id: str = ""
) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        reply = await posts.ListPosts(
            pb.ListPostsRequest(page_size=page_size, page_token=token, author_id=author_id),
            metadata=metadata,
        )
        seen.extend(p.id for p in reply.posts)
        token = reply.next_page_token
        if not token:
            return seen


# ------------------------------------------------------------------ create


async def test_reads_and_writes_describe_a_post_identically(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    """Writes answer from the ORM row, reads from the hot-path SQL: the same
    post, to the microsecond and the etag, either way."""
    me = _as(resources, alice)
    created = await _create(posts, me, "one post, two ways of reading it")

    got = (await posts.GetPost(pb.GetPostRequest(id=created.id), metadata=me)).post
    (listed,) = [
        p
        for p in (await posts.ListPosts(pb.ListPostsRequest(), metadata=me)).posts
        if p.id == created.id
    ]

    assert got == created
    assert listed == created
    assert created.create_time.nanos % 1000 == 0  # PostgreSQL keeps microseconds


@pytest.mark.parametrize(
    "content",
    [
        "hello",
        "  leading and trailing spaces kept  \n",
        "絵文字 🎉👩‍👩‍👧 and combining é",
        "x" * 5000,
        "🎉" * 5000,
    ],
)
async def test_create_stores_exactly_what_the_author_typed(
    posts: PostServiceStub, resources: Resources, alice: TestUser, content: str
) -> None:
    post = await _create(posts, _as(resources, alice), content)
    assert post.content == content
    assert post.author_id == str(alice.id)
    assert post.create_time == post.update_time
    assert post.etag
    # Analysed by rust_compute, as the reference implementation would.
    expected = reference.analyze(content)
    assert post.analysis.state == post_pb2.ANALYSIS_STATE_READY
    assert post.analysis.word_count == expected["word_count"]
    assert post.analysis.reading_time_seconds == expected["reading_time_seconds"]
    assert post.analysis.simhash == int(expected["simhash"])
    assert uuid.UUID(post.id).version == 7
    async with resources.sessions() as session:
        stored = await session.get(Post, uuid.UUID(post.id))
    assert stored is not None
    assert stored.content == content


@pytest.mark.parametrize(
    ("content", "rules"),
    [
        ("", {"string.min_len", "content.not_blank"}),
        (" \n\t\u3000 ", {"content.not_blank"}),
        ("x" * 5001, {"string.max_len"}),
        ("🎉" * 5001, {"string.max_len"}),
    ],
)
async def test_create_refuses_content_outside_the_limits(
    posts: PostServiceStub, resources: Resources, alice: TestUser, content: str, rules: set[str]
) -> None:
    error = await _rejected(_create(posts, _as(resources, alice), content))
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in details.violations} == {"content"}
    assert {v.reason for v in details.violations} == rules
    assert (await snapshot(resources.sessions))["posts"] == []


# --------------------------------------------------------------------- get


async def test_get_returns_the_post_and_unknown_ids_are_not_found(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    created = await _create(posts, _as(resources, alice), "hello")
    reply = await posts.GetPost(pb.GetPostRequest(id=created.id), metadata=_as(resources, bob))
    assert reply.post == created
    details = error_details(
        await _rejected(posts.GetPost(pb.GetPostRequest(id=SOME_ID), metadata=_as(resources, bob)))
    )
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.error_info is not None
    assert details.error_info.reason == "POST_NOT_FOUND"


async def test_posts_of_deactivated_authors_are_hidden_except_from_moderators(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser, admin: TestUser
) -> None:
    hidden = await make_post(resources.sessions, author=alice, content="soon hidden")
    await make_post(resources.sessions, author=bob, content="stays")
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(is_active=False))

    as_bob, as_admin = _as(resources, bob), _as(resources, admin)
    error = await _rejected(posts.GetPost(pb.GetPostRequest(id=str(hidden)), metadata=as_bob))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert str(hidden) not in await _walk(posts, as_bob, 10)
    assert await _walk(posts, as_bob, 10, author_id=str(alice.id)) == []

    assert (await posts.GetPost(pb.GetPostRequest(id=str(hidden)), metadata=as_admin)).post.id
    assert str(hidden) in await _walk(posts, as_admin, 10)


# -------------------------------------------------------------------- list


async def test_list_is_newest_first_and_filters_by_author(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    me = _as(resources, alice)
    made = [await _create(posts, me, f"alice {i}") for i in range(3)]
    theirs = await _create(posts, _as(resources, bob), "bob")
    everyone = await posts.ListPosts(pb.ListPostsRequest(), metadata=me)
    assert [p.id for p in everyone.posts] == [theirs.id] + [p.id for p in reversed(made)]
    mine = await posts.ListPosts(pb.ListPostsRequest(author_id=str(alice.id)), metadata=me)
    assert [p.id for p in mine.posts] == [p.id for p in reversed(made)]


@pytest.mark.parametrize(("requested", "served"), [(0, 20), (1000, 100), (7, 7)])
async def test_page_size_default_and_cap(
    posts: PostServiceStub, resources: Resources, alice: TestUser, requested: int, served: int
) -> None:
    for _ in range(105):
        await make_post(resources.sessions, author=alice)
    reply = await posts.ListPosts(
        pb.ListPostsRequest(page_size=requested), metadata=_as(resources, alice)
    )
    assert len(reply.posts) == served
    assert reply.next_page_token


async def test_a_page_token_only_continues_its_own_listing(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    for author in (alice, alice, bob, bob):
        await make_post(resources.sessions, author=author)
    me = _as(resources, alice)
    first = await posts.ListPosts(
        pb.ListPostsRequest(page_size=1, author_id=str(alice.id)), metadata=me
    )
    for request in (
        pb.ListPostsRequest(page_token=first.next_page_token, author_id=str(bob.id)),
        pb.ListPostsRequest(page_token=first.next_page_token),
        pb.ListPostsRequest(page_token=first.next_page_token[:-3] + "AAA", author_id=str(alice.id)),
        pb.ListPostsRequest(page_token="not-a-token"),
    ):
        details = error_details(await _rejected(posts.ListPosts(request, metadata=me)))
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in details.violations] == ["page_token"]


async def test_paging_returns_every_existing_post_exactly_once_under_concurrent_writes(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    initial = {
        str(await make_post(resources.sessions, author=alice, content=f"p{i}")) for i in range(60)
    }
    walker, writer = _as(resources, bob), _as(resources, alice)
    stop = asyncio.Event()

    async def keep_writing() -> None:
        while not stop.is_set():
            new = await _create(posts, writer, f"inserted while paging {uuid.uuid4()}")
            await _create(posts, writer, f"and another {uuid.uuid4()}")
            # Deleting a post that was written meanwhile must not shift pages either.
            await posts.DeletePost(pb.DeletePostRequest(id=new.id), metadata=writer)

    writers = [asyncio.ensure_future(keep_writing()) for _ in range(3)]
    try:
        seen: list[str] = []
        token = ""
        while True:
            reply = await posts.ListPosts(
                pb.ListPostsRequest(page_size=7, page_token=token), metadata=walker
            )
            seen.extend(p.id for p in reply.posts)
            token = reply.next_page_token
            await asyncio.sleep(0.02)  # let the writers interleave with every page
            if not token:
                break
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert len(seen) == len(set(seen)), "a post was returned twice"
    assert initial <= set(seen), "a post that existed at the start was skipped"


# ------------------------------------------------------------------ update


async def test_update_changes_content_time_and_etag_only_when_content_changes(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    created = await _create(posts, me, "first")
    same = await posts.UpdatePost(
        pb.UpdatePostRequest(
            post=post_pb2.Post(id=created.id, content="first"), update_mask=_content_mask()
        ),
        metadata=me,
    )
    assert same.post == created
    changed = await posts.UpdatePost(
        pb.UpdatePostRequest(
            post=post_pb2.Post(id=created.id, content="second", etag=created.etag),
            update_mask=_content_mask(),
        ),
        metadata=me,
    )
    assert changed.post.content == "second"
    assert changed.post.etag != created.etag
    assert changed.post.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert changed.post.create_time == created.create_time


@pytest.mark.parametrize(
    ("paths", "content", "reasons"),
    [
        (("title",), "x", {"mask.unknown"}),
        (("author_id",), "x", {"mask.immutable"}),
        (("content", "create_time"), "x", {"mask.immutable"}),
        ((), "x", {"mask.empty"}),
        (("content",), "", {"update_post.content_required"}),
        (("content",), "x" * 5001, {"string.max_len"}),
    ],
)
async def test_bad_updates_are_invalid_argument_and_change_nothing(
    posts: PostServiceStub,
    resources: Resources,
    alice: TestUser,
    paths: tuple[str, ...],
    content: str,
    reasons: set[str],
) -> None:
    post_id = await make_post(resources.sessions, author=alice, content="original")
    before = await snapshot(resources.sessions)
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    error = await _rejected(
        posts.UpdatePost(
            pb.UpdatePostRequest(
                post=post_pb2.Post(id=str(post_id), content=content), update_mask=mask
            ),
            metadata=_as(resources, alice),
        )
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in details.violations} == reasons
    assert await snapshot(resources.sessions) == before


async def test_a_moderator_may_edit_anyones_post_and_others_may_not(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser, admin: TestUser
) -> None:
    post_id = str(await make_post(resources.sessions, author=alice))
    request = pb.UpdatePostRequest(
        post=post_pb2.Post(id=post_id, content="moderated"), update_mask=_content_mask()
    )
    before = await snapshot(resources.sessions)
    error = await _rejected(posts.UpdatePost(request, metadata=_as(resources, bob)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await snapshot(resources.sessions) == before
    reply = await posts.UpdatePost(request, metadata=_as(resources, admin))
    assert (reply.post.content, reply.post.author_id) == ("moderated", str(alice.id))


async def test_fifty_concurrent_updates_with_one_etag_let_exactly_one_win(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    created = await _create(posts, me, "original")
    results = await asyncio.gather(
        *[
            posts.UpdatePost(
                pb.UpdatePostRequest(
                    post=post_pb2.Post(id=created.id, content=f"edit {i}", etag=created.etag),
                    update_mask=_content_mask(),
                ),
                metadata=me,
            )
            for i in range(50)
        ],
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, pb.UpdatePostResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1
    assert len(losers) == 49
    assert {e.code() for e in losers} == {grpc.StatusCode.ABORTED}
    async with resources.sessions() as session:
        stored = (
            await session.execute(select(Post).where(Post.id == uuid.UUID(created.id)))
        ).scalar_one()
    # No lost write: what is stored is exactly the one acknowledged edit.
    assert stored.content == winners[0].post.content
    assert stored.version == 2


# ------------------------------------------------------------------ delete


async def test_delete_by_author_then_not_found(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    created = await _create(posts, me, "bye")
    await posts.DeletePost(pb.DeletePostRequest(id=created.id, etag=created.etag), metadata=me)
    for call in (
        posts.GetPost(pb.GetPostRequest(id=created.id), metadata=me),
        posts.DeletePost(pb.DeletePostRequest(id=created.id), metadata=me),
    ):
        assert (await _rejected(call)).code() == grpc.StatusCode.NOT_FOUND


async def test_delete_refuses_others_and_stale_etags_and_changes_nothing(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser, admin: TestUser
) -> None:
    me = _as(resources, alice)
    created = await _create(posts, me, "v1")
    await posts.UpdatePost(
        pb.UpdatePostRequest(
            post=post_pb2.Post(id=created.id, content="v2"), update_mask=_content_mask()
        ),
        metadata=me,
    )
    before = await snapshot(resources.sessions)
    denied = await _rejected(
        posts.DeletePost(pb.DeletePostRequest(id=created.id), metadata=_as(resources, bob))
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    stale = await _rejected(
        posts.DeletePost(pb.DeletePostRequest(id=created.id, etag=created.etag), metadata=me)
    )
    assert error_details(stale).code == grpc.StatusCode.ABORTED
    assert await snapshot(resources.sessions) == before
    await posts.DeletePost(pb.DeletePostRequest(id=created.id), metadata=_as(resources, admin))
    assert (await snapshot(resources.sessions))["posts"] == []


async def test_a_nul_character_is_refused_by_the_contract(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    error = await _rejected(_create(posts, _as(resources, alice), "before\x00after"))
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.reason for v in details.violations} == {"string.not_contains"}


async def test_an_etag_of_unusual_digits_is_stale_not_a_crash(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    post_id = str(await make_post(resources.sessions, author=alice))
    error = await _rejected(
        posts.DeletePost(
            pb.DeletePostRequest(id=post_id, etag="²-abc"), metadata=_as(resources, alice)
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
