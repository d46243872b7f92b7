"""SearchPosts' plan choice: every plan returns the same pages, the oracle's posts.

The gateway picks WALK (the feed index newest first, each row tested) or
BITMAP (every match from the GIN index, then sorted) from a probe of the
newest posts (nuell_gateway.db.search). The choice may only change the
time a search takes, never its answer.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from typing import Any

import pytest
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub

from nuell_gateway.db import search as search_rows
from nuell_gateway.resources import Resources
from tests.utils.factories import TestUser, bearer

WORDS = ["東京", "京都", "ラーメン", "抹茶", "猫", "雨の日", "rust", "postgres", "café"]


def test_the_walk_is_chosen_where_it_reads_fewer_rows() -> None:
    def plan(density: float, need: int) -> str:
        return search_rows.choose_plan(
            matched=round(density * 1000), sampled=1000, posts=1e6, need=need
        )

    # A page of 21 among 1M posts: the walk from a density of sqrt(21 / 2M) = 0.32 %.
    assert plan(0.004, 21) == "walk"
    assert plan(0.003, 21) == "bitmap"
    # The relevance window of 2,000: from sqrt(2000 / 2M) = 3.2 %.
    assert plan(0.033, 2000) == "walk"
    assert plan(0.031, 2000) == "bitmap"
    assert plan(0, 21) == "bitmap"
    assert search_rows.choose_plan(matched=0, sampled=0, posts=-1, need=21) == "bitmap"


def _oracle(text: str, query: str) -> bool:
    normal = unicodedata.normalize("NFKC", text).lower()
    return all(term in normal for term in query.split())


async def _pages(
    posts: PostServiceStub, metadata: Any, query: str, order: pb.SearchOrder.ValueType
) -> list[tuple[str, float]]:
    seen: list[tuple[str, float]] = []
    token = ""
    while True:
        reply = await posts.SearchPosts(
            pb.SearchPostsRequest(query=query, order_by=order, page_size=3, page_token=token),
            metadata=metadata,
        )
        seen += [(r.post.id, r.score) for r in reply.results]
        token = reply.next_page_token
        if not token:
            return seen


async def test_every_plan_returns_the_same_pages(
    posts: PostServiceStub,
    resources: Resources,
    alice: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = bearer(resources.access_tokens, alice)
    rng = random.Random(5)  # noqa: S311 - a reproducible corpus
    texts = [
        " ".join(rng.choices(WORDS, k=rng.randint(1, 4))) + f" {uuid.uuid4().hex[:6]}"
        for _ in range(40)
    ]
    ids = []
    for text in texts:
        reply = await posts.CreatePost(pb.CreatePostRequest(content=text), metadata=me)
        ids.append(reply.post.id)
    queries = ["東京", "京都", "ラーメン 猫", "雨の", "rust", "café", "京"]
    answers: dict[str, dict[tuple[str, int], list[tuple[str, float]]]] = {}
    for plan in ("walk", "bitmap", "planner"):
        monkeypatch.setattr(search_rows, "choose_plan", lambda plan=plan, **_: plan)
        answers[plan] = {
            (query, order): await _pages(posts, me, query, order)
            for query in queries
            for order in (pb.SEARCH_ORDER_RELEVANCE, pb.SEARCH_ORDER_NEWEST)
        }
    assert answers["walk"] == answers["bitmap"] == answers["planner"]
    for (query, order), found in answers["walk"].items():
        expected = [i for i, text in zip(ids, texts, strict=True) if _oracle(text, query)]
        assert expected, query
        if order == pb.SEARCH_ORDER_NEWEST:
            assert [post_id for post_id, _ in found] == expected[::-1], query
        else:
            assert sorted(post_id for post_id, _ in found) == sorted(expected), query
            scores = [score for _, score in found]
            assert scores == sorted(scores, reverse=True), query


# Shaped like hashes only: these accounts never sign in.
_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


async def _many_users_few_posts(resources: Resources) -> None:
    """3,000 accounts and 40 posts, all matching 東京, by the first 40 accounts
    in id order, with fresh statistics. Left to itself, the planner merged the
    author index with the users' key (which it could stop reading early) and
    sorted by time, reading every post, rather than walk the feed."""
    async with resources.hot_reads.connection() as connection:
        await connection.execute(
            "INSERT INTO users (id, email, hashed_password) SELECT gen_random_uuid(),"
            " 'u' || n || '@example.jp', %s FROM generate_series(1, 3000) n",
            (_HASH,),
        )
        await connection.execute(
            "INSERT INTO posts (id, user_id, content, created_at, updated_at, analysis_state,"
            " word_count, reading_time_seconds, simhash, search_vector)"
            " SELECT gen_random_uuid(), u.id, '東京 ' || n, now() - n * interval '1 s',"
            " now() - n * interval '1 s', 'ready', 2, 1, 0, to_tsvector('simple', '東京')"
            " FROM generate_series(1, 40) n"
            " JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET n LIMIT 1) u ON true"
        )
        await connection.execute("ANALYZE users, posts")


@pytest.mark.parametrize("newest", [True, False])
@pytest.mark.parametrize("tables", ["as left", "many users, few posts"])
async def test_the_plans_read_what_they_say(
    resources: Resources, newest: bool, tables: str
) -> None:
    if tables == "many users, few posts":
        await _many_users_few_posts(resources)
    params = {
        "query": "'東京'",
        "include_inactive": False,
        "limit": 21,
        "author_id": None,
        "as_of": "2100-01-01",
        "window": search_rows.RELEVANCE_WINDOW,
    }
    plans = {}
    async with resources.hot_reads.connection() as connection, connection.transaction():
        sql = search_rows.search_sql(newest=newest, by_author=False, after=False, plan="bitmap")
        cursor = await connection.execute(f"EXPLAIN {sql}", params)
        plans["bitmap"] = "\n".join(row[0] for row in await cursor.fetchall())
        await connection.execute(search_rows._WALK_SETTINGS)
        sql = search_rows.search_sql(newest=newest, by_author=False, after=False, plan="walk")
        cursor = await connection.execute(f"EXPLAIN {sql}", params)
        plans["walk"] = "\n".join(row[0] for row in await cursor.fetchall())
    assert "ix_posts_feed" in plans["walk"]
    assert "Bitmap" not in plans["walk"]
    # Priced past jit_above_cost by the disabled sort: compiling would cost more than the read.
    assert "JIT" not in plans["walk"]
    assert "ix_posts_feed" not in plans["bitmap"]
