# ruff: noqa: RUF001 - full-width and half-width forms are the point
"""SearchPosts and ListSimilarPosts end to end: real gateway, PostgreSQL and rust_compute."""

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
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import URL

from nuell_gateway import search
from nuell_gateway.authz import Role
from nuell_gateway.db import search as search_rows
from nuell_gateway.db.models import Post, PostBandKey, User
from nuell_gateway.post_analysis import backfill_once
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.reference import text_analytics as reference
from tests.utils.compute import RustCompute, free_port
from tests.utils.factories import TestUser, bearer, make_user
from tests.utils.rpc import error_details
from tests.utils.samples import HOSTILE_QUERIES

Metadata = tuple[tuple[str, str], ...]

NEWEST = pb.SEARCH_ORDER_NEWEST
RELEVANCE = pb.SEARCH_ORDER_RELEVANCE


def _as(resources: Resources, user: TestUser) -> Metadata:
    return bearer(resources.access_tokens, user)


async def _create(posts: PostServiceStub, metadata: Metadata, content: str) -> post_pb2.Post:
    reply: pb.CreatePostResponse = await posts.CreatePost(
        pb.CreatePostRequest(content=content), metadata=metadata
    )
    return reply.post


async def _ids(
    posts: PostServiceStub,
    metadata: Metadata,
    query: str,
    *,
    order_by: pb.SearchOrder.ValueType = RELEVANCE,
    author_id: str = "",
) -> list[str]:
    reply = await posts.SearchPosts(
        pb.SearchPostsRequest(query=query, order_by=order_by, author_id=author_id),
        metadata=metadata,
    )
    return [result.post.id for result in reply.results]


async def _rejected(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


CORPUS = {
    "ja": "東京都の新しいラーメン屋に行きました。とても美味しかった！",
    "ja2": "京都で抹茶のアイスを食べた",
    "zh": "我们明天去北京的天安门广场",
    "ko": "서울에서 맛있는 비빔밥을 먹었어요",
    "mixed": "Rustで書いたWebサーバーがやっと動いた",
    "fullwidth": "ＰｙｔｈｏｎとＲｕｓｔの比較　ｶﾀｶﾅも",
    "emoji": "今日は晴れ☀️ 散歩日和😀🐶",
    "en": "Searching posts in PostgreSQL without extensions is possible",
    "en2": "The postgres planner picks the GIN index for rare words",
}

QUERIES = {
    "ラーメン": {"ja"},
    "東京都": {"ja"},
    "京都": {"ja", "ja2"},  # 東京都 contains 京都
    "美味しかった": {"ja"},
    "ラーメン 東京": {"ja"},
    "ラーメン 京都": {"ja"},
    "ラーメン 抹茶": set(),
    "天安门": {"zh"},
    "北京": {"zh"},
    "비빔밥": {"ko"},
    "맛있는": {"ko"},
    "rust": {"mixed", "fullwidth"},
    "ＲＵＳＴ": {"mixed", "fullwidth"},
    "webサーバー": {"mixed"},
    "サーバー": {"mixed"},
    "カタカナ": {"fullwidth"},
    "ｶﾀｶﾅ": {"fullwidth"},
    "python": {"fullwidth"},
    "晴れ": {"emoji"},
    "散歩日和😀": {"emoji"},
    "postgresql": {"en"},
    "postgres": {"en2"},
    "postgres*": {"en", "en2"},
    "POST*": {"en", "en2"},
    '"rare words"': {"en2"},
    '"words rare"': set(),
    "rare words": {"en2"},
    "extensions possible": {"en"},
}


async def test_japanese_chinese_korean_mixed_and_english_queries(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    ids = {name: (await _create(posts, me, text)).id for name, text in CORPUS.items()}
    names = {post_id: name for name, post_id in ids.items()}
    for query, expected in QUERIES.items():
        for order in (RELEVANCE, NEWEST):
            found = await _ids(posts, me, query, order_by=order)
            assert {names[i] for i in found} == expected, (query, order)
            assert len(found) == len(set(found))


async def test_relevance_scores_descend_and_newest_is_by_time(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    once = await _create(posts, me, "猫の写真を撮った")
    many = await _create(posts, me, "猫、猫、猫。うちの猫は猫らしい猫")
    latest = await _create(posts, me, "隣の猫")
    reply = await posts.SearchPosts(pb.SearchPostsRequest(query="猫"), metadata=me)
    scores = [result.score for result in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0
    assert reply.results[0].post.id == many.id
    newest = await _ids(posts, me, "猫", order_by=NEWEST)
    assert newest == [latest.id, many.id, once.id]


HOSTILE = HOSTILE_QUERIES


async def test_hostile_queries_never_reach_the_parser(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    await _create(posts, me, "a b it's 東京 京都 drop table posts")
    for query in HOSTILE:
        try:
            await posts.SearchPosts(pb.SearchPostsRequest(query=query), metadata=me)
        except grpc.aio.AioRpcError as error:
            details = error_details(error)
            assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (query, details)
            assert details.error_info is not None
            assert details.error_info.reason == "QUERY_EMPTY", query
    # Operators are only characters: these are plain word queries.
    assert len(await _ids(posts, me, "a & b")) == 1
    # One chunk: a phrase whatever separates its runs.
    assert len(await _ids(posts, me, "東京&|!:*()<->京都")) == 1
    assert len(await _ids(posts, me, "東京 & !京都")) == 1
    assert len(await _ids(posts, me, "'; DROP TABLE posts; --")) == 1


@pytest.mark.parametrize("query", ["", "   ", "!!!", "。、・「」", "😀🐶", "&|!:*()<->", "*"])
async def test_empty_queries_are_invalid(
    posts: PostServiceStub, resources: Resources, alice: TestUser, query: str
) -> None:
    error = await _rejected(
        posts.SearchPosts(pb.SearchPostsRequest(query=query), metadata=_as(resources, alice))
    )
    details = error_details(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.violations] == ["query"]


async def test_query_limits(posts: PostServiceStub, resources: Resources, alice: TestUser) -> None:
    me = _as(resources, alice)
    too_long = await _rejected(
        posts.SearchPosts(pb.SearchPostsRequest(query="a" * 257), metadata=me)
    )
    assert error_details(too_long).code == grpc.StatusCode.INVALID_ARGUMENT
    assert await _ids(posts, me, "あ" * 33) == []  # 256 characters, 32 bigrams: fine
    many = await _rejected(posts.SearchPosts(pb.SearchPostsRequest(query="あ" * 34), metadata=me))
    details = error_details(many)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.error_info is not None
    assert details.error_info.reason == "QUERY_TOO_LONG"
    words = " ".join(f"w{n}" for n in range(33))
    assert (
        error_details(
            await _rejected(posts.SearchPosts(pb.SearchPostsRequest(query=words), metadata=me))
        ).code
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def _walk(
    posts: PostServiceStub,
    metadata: Metadata,
    query: str,
    order: pb.SearchOrder.ValueType,
    page_size: int,
    arriving: str = "新着の東京タワー",
) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        reply = await posts.SearchPosts(
            pb.SearchPostsRequest(
                query=query, order_by=order, page_size=page_size, page_token=token
            ),
            metadata=metadata,
        )
        seen.extend(result.post.id for result in reply.results)
        token = reply.next_page_token
        if not token:
            return seen
        # Meanwhile, more matching posts arrive (by someone else).
        await _create(posts, metadata, f"{arriving} {len(seen)} {uuid.uuid4().hex}")


async def test_paging_returns_each_post_exactly_once_while_posts_arrive(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    me = _as(resources, alice)
    others = _as(resources, bob)
    texts = [f"東京タワー{'の夜景' * (n % 4)} その{n}番目 {uuid.uuid4().hex}" for n in range(23)]
    existing = {(await _create(posts, me, text)).id for text in texts}
    for order in (RELEVANCE, NEWEST):
        seen = await _walk(posts, others, "東京タワー", order, page_size=5)
        assert len(seen) == len(set(seen)), order
        assert existing <= set(seen), order


async def test_relevance_ranks_the_newest_window_of_matches_as_of_the_first_page(
    posts: PostServiceStub,
    resources: Resources,
    alice: TestUser,
    bob: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search_rows, "RELEVANCE_WINDOW", 5)
    me = _as(resources, alice)
    made = [(await _create(posts, me, f"窓の外 {n} {uuid.uuid4().hex}")).id for n in range(8)]
    seen = await _walk(
        posts, _as(resources, bob), "窓の外", RELEVANCE, page_size=2, arriving="新しい窓の外"
    )
    # The five newest that existed when the walk began, each once; the
    # posts written between pages are not part of this walk.
    assert sorted(seen) == sorted(made[-5:])


async def test_page_tokens_only_continue_their_own_search(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    for n in range(3):
        await _create(posts, me, f"token test {n} 鉄道")
    reply = await posts.SearchPosts(pb.SearchPostsRequest(query="鉄道", page_size=1), metadata=me)
    assert reply.next_page_token
    for other in (
        pb.SearchPostsRequest(query="token", page_size=1, page_token=reply.next_page_token),
        pb.SearchPostsRequest(
            query="鉄道", order_by=NEWEST, page_size=1, page_token=reply.next_page_token
        ),
        pb.SearchPostsRequest(query="鉄道", page_size=1, page_token="garbage"),
    ):
        error = await _rejected(posts.SearchPosts(other, metadata=me))
        details = error_details(error)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in details.violations] == ["page_token"]


async def test_author_filter(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    mine = await _create(posts, _as(resources, alice), "富士山に登った")
    await _create(posts, _as(resources, bob), "富士山を見た")
    found = await _ids(posts, _as(resources, bob), "富士山", author_id=str(alice.id))
    assert found == [mine.id]


async def test_edits_and_deletes_are_reflected_at_once(
    posts: PostServiceStub, resources: Resources, alice: TestUser
) -> None:
    me = _as(resources, alice)
    post = await _create(posts, me, "大阪のたこ焼き")
    assert await _ids(posts, me, "たこ焼き") == [post.id]
    edited = await posts.UpdatePost(
        pb.UpdatePostRequest(
            post=post_pb2.Post(id=post.id, content="名古屋の味噌カツ"),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        ),
        metadata=me,
    )
    assert edited.post.analysis.state == post_pb2.ANALYSIS_STATE_READY
    assert await _ids(posts, me, "たこ焼き") == []
    assert await _ids(posts, me, "味噌カツ") == [post.id]
    await posts.DeletePost(pb.DeletePostRequest(id=post.id), metadata=me)
    assert await _ids(posts, me, "味噌カツ") == []
    async with resources.sessions() as session:
        keys = await session.scalar(select(func.count()).select_from(PostBandKey))
    assert keys == 0


async def test_deactivated_authors_are_found_by_moderators_only(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    post = await _create(posts, _as(resources, alice), "北海道の雪まつり")
    admin = await make_user(resources.sessions, role=Role.ADMIN)
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(is_active=False))
    assert await _ids(posts, _as(resources, bob), "雪まつり") == []
    assert await _ids(posts, _as(resources, admin), "雪まつり") == [post.id]


SIMILAR_BASE = (
    "今日は朝から雨が降っていたので、家でコーヒーを飲みながら本を読んで過ごしました。"
    "午後には晴れてきたので少し散歩に出かけました。"
)


async def test_similar_posts_across_authors_verified_exactly(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    target = await _create(posts, _as(resources, alice), SIMILAR_BASE)
    near = SIMILAR_BASE.replace("本を読んで", "映画を見て")
    nearer = SIMILAR_BASE + "楽しかった"
    far = "全然違う話題です。明日の会議の資料を準備しなければならない。"
    carol = await make_user(resources.sessions)
    ids = {
        "nearer": (await _create(posts, _as(resources, bob), nearer)).id,
        "near": (await _create(posts, _as(resources, carol), near)).id,
        "far": (await _create(posts, _as(resources, bob), far)).id,
    }
    reply = await posts.ListSimilarPosts(
        pb.ListSimilarPostsRequest(id=target.id), metadata=_as(resources, bob)
    )
    got = [(r.post.id, r.jaccard) for r in reply.results]
    want = sorted(
        (
            (ids[name], reference.jaccard(reference.shingles(SIMILAR_BASE), reference.shingles(t)))
            for name, t in (("nearer", nearer), ("near", near), ("far", far))
        ),
        key=lambda pair: -pair[1],
    )
    assert got == [pair for pair in want if pair[1] >= 0.5]
    assert [name for name, post_id in ids.items() if post_id in dict(got)] == ["nearer", "near"]
    one = await posts.ListSimilarPosts(
        pb.ListSimilarPostsRequest(id=target.id, page_size=1), metadata=_as(resources, bob)
    )
    assert [r.post.id for r in one.results] == [ids["nearer"]]


async def test_a_crowded_post_still_gets_its_most_similar_posts(
    posts: PostServiceStub,
    resources: Resources,
    alice: TestUser,
    bob: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A post whose band keys many others share (stop bands): the same page as when it is not.

    With SIMILAR_PROBE at 2 every band of the target is a stop band (each is in
    the copies read first), so the candidates come back through pairs of stop
    bands only; the page must still be the exact, most similar first one.
    """
    target = await _create(posts, _as(resources, alice), SIMILAR_BASE)
    texts = {
        "nearer": SIMILAR_BASE + "楽しかった",
        "near": SIMILAR_BASE.replace("本を読んで", "映画を見て"),
        "half": SIMILAR_BASE[:30] + "夜は友達と駅前の居酒屋で焼き鳥を食べて帰りました。",
        "far": "全然違う話題です。明日の会議の資料を準備しなければならない。",
    }

    async def by_someone(text: str) -> post_pb2.Post:
        # One author each: an author's near repeats are refused by CreatePost.
        return await _create(posts, _as(resources, await make_user(resources.sessions)), text)

    written = {name: await by_someone(text) for name, text in texts.items()}
    copies = [(await by_someone(SIMILAR_BASE)).id for _ in range(5)]
    base = reference.shingles(SIMILAR_BASE)
    scored = [(post_id, 1.0) for post_id in reversed(copies)]  # equal Jaccard: newest first
    scored += sorted(
        (
            (written[name].id, reference.jaccard(base, reference.shingles(text)))
            for name, text in texts.items()
        ),
        key=lambda pair: -pair[1],
    )
    want = [pair for pair in scored if pair[1] >= 0.5]
    assert [post_id for post_id, _ in want[5:]] == [written["nearer"].id, written["near"].id]
    me = _as(resources, bob)
    for probe in (search.SIMILAR_PROBE, 2, 6):
        monkeypatch.setattr(search, "SIMILAR_PROBE", probe)
        reply = await posts.ListSimilarPosts(pb.ListSimilarPostsRequest(id=target.id), metadata=me)
        assert [r.post.id for r in reply.results] == [post_id for post_id, _ in want], probe
        assert [r.jaccard for r in reply.results] == pytest.approx([j for _, j in want]), probe
        three = await posts.ListSimilarPosts(
            pb.ListSimilarPostsRequest(id=target.id, page_size=3), metadata=me
        )
        assert [r.post.id for r in three.results] == [post_id for post_id, _ in want[:3]], probe


def test_stop_bands_are_paired_all_when_few_and_in_sequence_when_many() -> None:
    assert search_rows.stop_pairs([3]) == []
    assert search_rows.stop_pairs([3, 8, 20]) == [(3, 8), (3, 20), (8, 20)]
    many = list(range(0, 42, 2))
    assert search_rows.stop_pairs(many) == [(a, a + 2) for a in range(0, 40, 2)]


async def test_similar_posts_not_found_and_hidden(
    posts: PostServiceStub, resources: Resources, alice: TestUser, bob: TestUser
) -> None:
    error = await _rejected(
        posts.ListSimilarPosts(
            pb.ListSimilarPostsRequest(id=str(uuid.uuid4())), metadata=_as(resources, bob)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    target = await _create(posts, _as(resources, bob), SIMILAR_BASE)
    copy = await _create(posts, _as(resources, alice), SIMILAR_BASE + "!")
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(is_active=False))
    reply = await posts.ListSimilarPosts(
        pb.ListSimilarPostsRequest(id=target.id), metadata=_as(resources, bob)
    )
    assert list(reply.results) == []
    hidden = await _rejected(
        posts.ListSimilarPosts(pb.ListSimilarPostsRequest(id=copy.id), metadata=_as(resources, bob))
    )
    assert hidden.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def own_compute(
    database_url: URL, empty_tables: None
) -> AsyncIterator[tuple[Gateway, RustCompute]]:
    rust = RustCompute(free_port()).start()
    gateway = await Gateway.start(
        make_settings(
            database_url, compute_target=rust.address, analysis_backfill_interval_seconds=3600
        )
    )
    yield gateway, rust
    await gateway.stop()
    rust.stop()


async def test_compute_down_is_unavailable_and_posts_become_searchable_later(
    own_compute: tuple[Gateway, RustCompute],
) -> None:
    gateway, rust = own_compute
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = PostServiceStub(channel)
        rust.kill()
        written = await _create(stub, me, "停電中に書いた投稿")
        assert written.analysis.state == post_pb2.ANALYSIS_STATE_PENDING
        error = await _rejected(stub.SearchPosts(pb.SearchPostsRequest(query="停電"), metadata=me))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        # Not analysed yet: no band keys, so nothing to compare.
        similar = await stub.ListSimilarPosts(
            pb.ListSimilarPostsRequest(id=written.id), metadata=me
        )
        assert list(similar.results) == []
        rust.start()
        for _ in range(100):
            try:
                assert await _ids(stub, me, "停電") == []  # not indexed until analysed
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)  # the channel reconnects
        assert await backfill_once(gateway.resources) == 1
        assert await _ids(stub, me, "停電") == [written.id]


async def test_the_backfill_indexes_posts_from_before_the_index(
    own_compute: tuple[Gateway, RustCompute],
) -> None:
    gateway, _ = own_compute
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = PostServiceStub(channel)
        old = [await _create(stub, me, f"移行前の投稿 {n} {'草' * n}") for n in range(1, 4)]
        # As migration 0007 leaves them: analysed, but not indexed.
        async with gateway.resources.sessions.begin() as session:
            await session.execute(update(Post).values(search_vector=None))
            await session.execute(delete(PostBandKey))
        assert await _ids(stub, me, "移行前") == []
        await backfill_once(gateway.resources)
        assert set(await _ids(stub, me, "移行前")) == {p.id for p in old}
        for post in old:
            reply = await stub.GetPost(pb.GetPostRequest(id=post.id), metadata=me)
            # Indexing is not an edit.
            assert (reply.post.etag, reply.post.update_time) == (post.etag, post.update_time)
        async with gateway.resources.sessions() as session:
            keys = await session.scalar(select(func.count()).select_from(PostBandKey))
        assert keys == 3  # one row of 42 keys each


def test_tokens_in_the_queries_above_are_what_the_reference_says() -> None:
    # The corpus exercises the spec's classes: each CJK query is a substring
    # of its posts after normalisation, and of no other.
    for query, expected in QUERIES.items():
        if any("\u3040" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7a3" for c in query):
            chunks = reference.normalise(query).split()
            hits = {
                name
                for name, text in CORPUS.items()
                if all(chunk.rstrip("*") in reference.normalise(text) for chunk in chunks)
            }
            assert hits == expected, query
