"""PostgreSQL restarting under load: UNAVAILABLE while it is down, never INTERNAL,
and full service afterwards without restarting the gateway."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy.engine import make_url

from nuell_gateway.db.embedded import start_embedded_postgres
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.database import scratch_dir
from tests.utils.factories import bearer, make_post, make_user


def _pg_ctl(data_dir: Path, *args: str) -> None:
    """pg_ctl for the embedded server, as the user it runs as.

    From a fresh interpreter: switching user from this process, which has
    grpc's and the pools' threads, makes pg_ctl crash.
    """
    script = (
        "import os, sys, pathlib; from pgserver import _commands; "
        "user = 'pgserver' if os.geteuid() == 0 else None; "
        "_commands.pg_ctl(sys.argv[2:], pgdata=pathlib.Path(sys.argv[1]), user=user, timeout=60)"
    )
    subprocess.run([sys.executable, "-c", script, str(data_dir), *args], check=True, timeout=90)


async def test_a_database_restart_is_unavailable_then_fully_served() -> None:
    data_dir = scratch_dir() / "postgres"
    url = make_url(start_embedded_postgres(data_dir, delete_on_exit=True))
    url = url.set(drivername="postgresql+psycopg")
    upgrade_to_head(url)
    # Calls wait this long for a connection before answering UNAVAILABLE.
    gateway = await Gateway.start(make_settings(url, db_pool_timeout_seconds=0.5))
    outcomes: list[tuple[float, str, grpc.StatusCode]] = []
    stop = asyncio.Event()
    try:
        author = await make_user(gateway.resources.sessions)
        post_id = str(await make_post(gateway.resources.sessions, author=author))
        me = bearer(gateway.resources.access_tokens, author)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            posts = PostServiceStub(channel)

            async def call(kind: str, n: int) -> None:
                try:
                    if kind == "get":
                        await posts.GetPost(pb.GetPostRequest(id=post_id), metadata=me, timeout=5)
                    elif kind == "list":
                        await posts.ListPosts(pb.ListPostsRequest(), metadata=me, timeout=5)
                    else:
                        await posts.CreatePost(
                            pb.CreatePostRequest(
                                content=f"written under load {n} {time.time_ns()}"
                            ),
                            metadata=me,
                            timeout=5,
                        )
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                outcomes.append((time.monotonic(), kind, code))

            async def keep_calling(kind: str) -> None:
                n = 0
                while not stop.is_set():
                    await call(kind, n)
                    n += 1
                    await asyncio.sleep(0.01)

            load = [asyncio.ensure_future(keep_calling(k)) for k in ("get", "list", "create")]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_pg_ctl, data_dir, "-m", "fast", "-w", "stop")
            down_since = time.monotonic()
            await asyncio.sleep(2.5)
            await asyncio.to_thread(
                _pg_ctl,
                data_dir, "-w", "-o", '-h ""', "-o", f"-k {data_dir}",
                "-l", str(data_dir / "log"), "start",
            )  # fmt: skip
            back_since = time.monotonic()
            # Full service again within a few seconds, without restarting anything.
            recovered_at = None
            while recovered_at is None and time.monotonic() < back_since + 10:
                recent = [o for o in outcomes if o[0] > time.monotonic() - 0.5]
                if {kind for _, kind, code in recent if code == grpc.StatusCode.OK} == {
                    "get",
                    "list",
                    "create",
                }:
                    recovered_at = time.monotonic()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*load)
    finally:
        stop.set()
        await gateway.stop()

    codes = Counter(code for _, _, code in outcomes)
    assert not {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN} & set(codes), codes
    during = {code for t, _, code in outcomes if down_since + 0.6 < t < back_since}
    assert grpc.StatusCode.UNAVAILABLE in during, codes
    assert recovered_at is not None, "no full service within 10 s of the restart"
    after = Counter((kind, code) for t, kind, code in outcomes if t > recovered_at)
    assert {code for _, code in after} == {grpc.StatusCode.OK}, after
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
