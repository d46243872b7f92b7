"""rust_compute killed under load: no write is lost, compute calls answer
UNAVAILABLE within 2 s, and everything recovers by itself when it is back."""

from __future__ import annotations

import asyncio
import time

import grpc
from nuell.compute.v1 import compute_service_pb2 as compute_pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from nuell_gateway.db.models import Post
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.compute import RustCompute, free_port
from tests.utils.factories import bearer, make_user


async def test_killing_compute_under_load_loses_no_write(
    database_url: URL, empty_tables: None
) -> None:
    rust = RustCompute(free_port()).start()
    gateway = await Gateway.start(
        make_settings(
            database_url, compute_target=rust.address, analysis_backfill_interval_seconds=0.2
        )
    )
    acknowledged: list[str] = []
    refused: list[grpc.StatusCode] = []
    analyze_outcomes: list[tuple[float, float, grpc.StatusCode]] = []
    stop = asyncio.Event()
    try:
        author = await make_user(gateway.resources.sessions)
        me = bearer(gateway.resources.access_tokens, author)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            posts, compute = PostServiceStub(channel), ComputeServiceStub(channel)

            async def write(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    try:
                        reply = await posts.CreatePost(
                            pb.CreatePostRequest(content=f"post {worker}-{n} {time.time_ns()}"),
                            metadata=me,
                            timeout=10,
                        )
                        acknowledged.append(reply.post.id)
                    except grpc.aio.AioRpcError as error:
                        refused.append(error.code())
                    n += 1

            async def analyse() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        await compute.Analyze(
                            compute_pb.AnalyzeRequest(text="load"), metadata=me, timeout=10
                        )
                        code = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as error:
                        code = error.code()
                    analyze_outcomes.append((started, time.monotonic() - started, code))
                    await asyncio.sleep(0.02)

            load = [asyncio.ensure_future(write(w)) for w in range(3)]
            load.append(asyncio.ensure_future(analyse()))
            await asyncio.sleep(0.5)
            rust.kill()
            killed_at = time.monotonic()
            await asyncio.sleep(1.5)
            rust.start()
            back_at = time.monotonic()
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*load)

        # Every acknowledged write is stored, and nothing was refused.
        assert refused == []
        async with gateway.resources.sessions() as session:
            stored = await session.scalar(
                select(func.count()).select_from(Post).where(Post.user_id == author.id)
            )
        assert stored == len(acknowledged) > 0
        # Compute calls while it was down: UNAVAILABLE, each within 2 s.
        down = [(took, code) for at, took, code in analyze_outcomes if killed_at < at < back_at]
        assert down
        assert {code for _, code in down} == {grpc.StatusCode.UNAVAILABLE}
        assert max(took for took, _ in down) < 2
        # Back by itself: the last calls succeed, and every post gets its analysis.
        assert analyze_outcomes[-1][2] == grpc.StatusCode.OK
        for _ in range(100):
            async with gateway.resources.sessions() as session:
                pending = await session.scalar(
                    select(func.count())
                    .select_from(Post)
                    .where(Post.user_id == author.id, Post.analysis_state == "pending")
                )
            if pending == 0:
                break
            await asyncio.sleep(0.1)
        assert pending == 0
    finally:
        stop.set()
        await gateway.stop()
        rust.stop()
