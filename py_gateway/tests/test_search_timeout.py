"""The statement timeout of SearchPosts and ListSimilarPosts: a clear status, never INTERNAL.

A query is made to outlast the timeout by another connection holding an
exclusive lock on the table it reads (statement_timeout counts lock waits),
so the test does not depend on how fast this machine is.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import cast

import grpc
import psycopg
import pytest
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.compute_client import Forwarding
from nuell_gateway.resources import Resources
from nuell_gateway.search import _timeout_ms
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.factories import bearer, make_user
from tests.utils.rpc import error_details

TIMEOUT_MS = 300


@pytest.fixture
async def short_timeout(database_url: URL, empty_tables: None) -> AsyncIterator[Gateway]:
    gateway = await Gateway.start(make_settings(database_url, search_timeout_ms=TIMEOUT_MS))
    yield gateway
    await gateway.stop()


async def _locked(database_url: URL, table: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    """A connection holding ACCESS EXCLUSIVE on `table` until it is closed."""
    url = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await psycopg.AsyncConnection.connect(url)
    await connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return connection


async def test_a_search_that_outlasts_its_timeout_is_deadline_exceeded(
    short_timeout: Gateway, database_url: URL
) -> None:
    gateway = short_timeout
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        posts = PostServiceStub(channel)
        written = (
            await posts.CreatePost(pb.CreatePostRequest(content="東京の時計台"), metadata=me)
        ).post
        similar = pb.ListSimilarPostsRequest(id=written.id)
        for order in (pb.SEARCH_ORDER_RELEVANCE, pb.SEARCH_ORDER_NEWEST):
            search = pb.SearchPostsRequest(query="時計", order_by=order)
            lock = await _locked(database_url, "posts")
            try:
                began = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await posts.SearchPosts(search, metadata=me, timeout=10)
                waited = time.monotonic() - began
            finally:
                await lock.close()
            details = error_details(caught.value)
            assert details.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert details.error_info is not None
            assert details.error_info.reason == "SEARCH_TIMEOUT"
            assert details.error_info.metadata["timeout_ms"] == str(TIMEOUT_MS)
            assert TIMEOUT_MS / 1000 <= waited < 5  # stopped by the server, not the client
            # The lock gone, the same search answers: the timeout did not stick
            # to a pooled connection in a broken state.
            reply = await posts.SearchPosts(search, metadata=me)
            assert [r.post.id for r in reply.results] == [written.id]

        lock = await _locked(database_url, "post_band_keys")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await posts.ListSimilarPosts(similar, metadata=me, timeout=10)
        finally:
            await lock.close()
        details = error_details(caught.value)
        assert details.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert details.error_info is not None
        assert details.error_info.reason == "SEARCH_TIMEOUT"
        await posts.ListSimilarPosts(similar, metadata=me)


async def test_the_timeout_is_local_to_the_search_transaction(short_timeout: Gateway) -> None:
    gateway = short_timeout
    author = await make_user(gateway.resources.sessions)
    me = bearer(gateway.resources.access_tokens, author)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        await PostServiceStub(channel).SearchPosts(pb.SearchPostsRequest(query="東京"), metadata=me)
    # Every pooled connection is back at the server's own timeout.
    pool = gateway.resources.hot_reads
    async with pool.connection() as connection:
        cursor = await connection.execute("SHOW statement_timeout")
        assert await cursor.fetchone() == ("0",)


def test_a_near_client_deadline_shortens_the_timeout(database_url: URL) -> None:
    settings = make_settings(database_url, search_timeout_ms=TIMEOUT_MS)
    resources = cast(Resources, SimpleNamespace(settings=settings))
    assert _timeout_ms(resources, Forwarding(seconds_left=None)) == TIMEOUT_MS
    assert _timeout_ms(resources, Forwarding(seconds_left=10)) == TIMEOUT_MS
    assert _timeout_ms(resources, Forwarding(seconds_left=0.05)) == 50
    assert _timeout_ms(resources, Forwarding(seconds_left=0)) == 1
