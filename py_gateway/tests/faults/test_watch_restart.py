"""A gateway killed outright (SIGKILL) while streaming WatchPosts: the client
resumes with the last token it saw, on the restarted process and on another
one, and gets every event written meanwhile exactly once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path

import grpc
from deploy import stack
from deploy.launcher import Launcher, free_port
from deploy.settings import Address, StackSettings
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.server import Gateway
from tests.conftest import TEST_JWT_KEYS
from tests.utils.factories import bearer, make_post, make_user

CREATED = pb.POST_EVENT_TYPE_CREATED


async def contents(call: grpc.aio.UnaryStreamCall, count: int) -> list[pb.PostEvent]:
    found: list[pb.PostEvent] = []
    async with asyncio.timeout(20):
        while len(found) < count:
            event = await call.read()
            assert event is not grpc.aio.EOF
            if event.type == CREATED:  # not the analyses the backfill adds
                found.append(event)
    return found


async def test_resuming_after_a_kill_9_loses_and_repeats_nothing(
    database_url: URL, gateway: Gateway, compute_address: str
) -> None:
    resources = gateway.resources
    author = await make_user(resources.sessions)
    me = bearer(resources.access_tokens, author)
    port = free_port()
    settings = StackSettings(
        gateway=Address("127.0.0.1", port),
        gateway_metrics=Address("127.0.0.1", free_port()),
        compute=Address.parse(compute_address, variable="compute", allow_port_zero=False),
    )
    env = os.environ | {"NUELL_JWT_KEYS": TEST_JWT_KEYS, "NUELL_WORKERS": "1"}
    url = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    service = stack.gateway_service(settings, env, url)
    launcher = Launcher(Path(tempfile.mkdtemp(prefix="watch-restart-")), say=lambda _: None)
    try:
        launcher.start(service)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = PostServiceStub(channel).WatchPosts(pb.WatchPostsRequest(), metadata=me)
            await watch.initial_metadata()
            for n in range(3):
                await make_post(resources.sessions, author=author, content=f"落ちる前 {n}")
            seen = await contents(watch, 3)
            os.killpg(launcher["py_gateway"].pid, signal.SIGKILL)
            for n in range(4):  # while no gateway of that address runs
                await make_post(resources.sessions, author=author, content=f"落ちた後 {n}")
        launcher.stop()
        launcher.start(service)
        token = seen[-1].resume_token
        expected = [f"落ちた後 {n}" for n in range(4)]
        for target in (f"127.0.0.1:{port}", f"127.0.0.1:{gateway.port}"):
            async with grpc.aio.insecure_channel(target) as channel:
                request = pb.WatchPostsRequest(resume_token=token)
                resumed = PostServiceStub(channel).WatchPosts(request, metadata=me)
                got = await contents(resumed, len(expected))
                assert [e.post.content for e in got] == expected
                await make_post(resources.sessions, author=author, content=f"{target} の次")
                (following,) = await contents(resumed, 1)
                assert following.post.content == f"{target} の次"
                resumed.cancel()
            expected.append(f"{target} の次")
    finally:
        launcher.stop()
        shutil.rmtree(launcher.log_dir, ignore_errors=True)
