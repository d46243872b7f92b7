"""A real gateway process for the hostile-input properties, and what they need around it.

Hypothesis drives plain synchronous tests: the gateway runs in its own
process (`python -m nuell_gateway serve`, one worker), so a blocking grpc
client cannot stall it, and the calls cross a real socket exactly as a
client's would. The database is reached from a private event loop in a
thread, to set up accounts and take before/after snapshots.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from deploy import stack
from deploy.launcher import Launcher, LaunchError, Running, free_port
from deploy.settings import Address, StackSettings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nuell.users.v1 import user_pb2, user_service_pb2
from sqlalchemy import delete, text, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from nuell_gateway.authz import Role
from nuell_gateway.convert import etag, use_etag_keys
from nuell_gateway.db.models import AuthSession, Base, Post, SignInThrottle, User
from nuell_gateway.security.tokens import AccessTokens
from tests.conftest import TEST_JWT_KEYS, make_settings
from tests.utils.factories import TestUser, bearer, make_post, make_user
from tests.utils.snapshot import SECURITY_RECORDS, snapshot

T = TypeVar("T")

Metadata = tuple[tuple[str, str], ...]
Snapshot = dict[str, list[tuple[object, ...]]]

# Anything a call may take; hostile inputs never justify a hang.
CALL_TIMEOUT_SECONDS = 15.0
START_TIMEOUT_SECONDS = 60.0


class LoopThread:
    """An event loop of our own in a daemon thread, for async helpers in sync tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class Database:
    """The test database, seen from the tests' side of the socket."""

    def __init__(self, url: URL, loop: LoopThread) -> None:
        self._loop = loop
        self.engine: AsyncEngine = loop.run(_make_engine(url))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def snapshot(self) -> Snapshot:
        """Every row of every table but the security records (tests.utils.snapshot)."""
        return self.run(snapshot(self.sessions, ignoring=SECURITY_RECORDS))

    def truncate(self) -> None:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)

        async def go() -> None:
            async with self.engine.begin() as connection:
                await connection.execute(text(f"TRUNCATE {tables} CASCADE"))

        self.run(go())

    def close(self) -> None:
        self.run(self.engine.dispose())


async def _make_engine(url: URL) -> AsyncEngine:
    # Created on the thread's loop, which every later use runs on.
    return create_async_engine(url, pool_size=2)


@dataclass(frozen=True)
class GatewayProcess:
    """A running `python -m nuell_gateway serve`, started by the stack's launcher."""

    running: Running
    address: str
    # Internal addresses no reply may name.
    compute_address: str
    database_name: str

    def log(self) -> str:
        return self.running.output()

    def alive(self) -> bool:
        return self.running.popen.poll() is None


def _gateway_env(compute_address: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUELL_")}
    env.pop("DATABASE_URL", None)
    env.update(
        NUELL_JWT_KEYS=TEST_JWT_KEYS,
        NUELL_WORKERS="1",
        NUELL_PASSWORD_HASH_WORKERS="2",
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
        # No background writer may move rows under a before/after snapshot:
        # neither the analysis backfill nor the mail sender (empty: no SMTP).
        NUELL_ANALYSIS_BACKFILL_INTERVAL_SECONDS="3600",
        NUELL_SMTP_URL="",
    )
    return env


@pytest.fixture(scope="package")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="package")
def database(database_url: URL, loop_thread: LoopThread) -> Iterator[Database]:
    db = Database(database_url, loop_thread)
    db.truncate()
    yield db
    db.close()


@pytest.fixture(scope="package")
def gateway_process(
    database: Database,
    database_url: URL,
    compute_address: str,
) -> Iterator[GatewayProcess]:
    # Free ports of its own: other gateways may be running on this machine.
    settings = StackSettings(
        gateway=Address("127.0.0.1", free_port()),
        gateway_metrics=Address("127.0.0.1", free_port()),
        compute=Address.parse(compute_address, variable="compute", allow_port_zero=False),
    )
    service = stack.gateway_service(
        settings,
        _gateway_env(compute_address),
        database_url.render_as_string(hide_password=False),
    )
    # Not under pytest's tmp_path: concurrent pytest runs prune each other's base folders.
    launcher = Launcher(
        Path(tempfile.mkdtemp(prefix="nuell-fuzz-gateway-")),
        startup_timeout=START_TIMEOUT_SECONDS,
        say=lambda _: None,
    )
    try:
        (running,) = launcher.start(service)
    except LaunchError as exc:
        pytest.fail(f"the gateway did not start: {exc}", pytrace=False)
    try:
        yield GatewayProcess(
            running=running,
            address=settings.gateway.connect_target,
            compute_address=compute_address,
            database_name=str(database_url.database),
        )
    finally:
        launcher.stop()
        shutil.rmtree(launcher.log_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def channel(gateway_process: GatewayProcess) -> Iterator[grpc.Channel]:
    """A blocking channel to the gateway process (the name shadows the in-process one)."""
    with grpc.insecure_channel(gateway_process.address) as open_channel:
        grpc.channel_ready_future(open_channel).result(timeout=CALL_TIMEOUT_SECONDS)
        yield open_channel


def health_status(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_SECONDS
    )
    status: int = reply.status
    return status


SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class World:
    """The accounts and post the hostile requests can aim at."""

    user: TestUser
    admin: TestUser
    post_id: str
    post_etag: str
    callers: dict[str, Metadata]

    def tokens(self) -> frozenset[str]:
        """Every access token a caller of these tests holds."""
        return frozenset(
            value.removeprefix("Bearer ") for meta in self.callers.values() for _, value in meta
        )


CALLERS = ("anonymous", "user", "admin")
POST_CONTENT = "a post to aim at"


@pytest.fixture(scope="package")
def world(database: Database, database_url: URL, gateway_process: GatewayProcess) -> World:
    tokens = AccessTokens(make_settings(database_url))
    use_etag_keys(make_settings(database_url).signing_keys.values())  # the gateway's keys
    user = database.run(make_user(database.sessions, role=Role.USER))
    admin = database.run(make_user(database.sessions, role=Role.ADMIN))
    post_id = database.run(make_post(database.sessions, author=user, content=POST_CONTENT))
    return World(
        user=user,
        admin=admin,
        post_id=str(post_id),
        post_etag=etag(post_id, 1),
        callers={"anonymous": (), "user": bearer(tokens, user), "admin": bearer(tokens, admin)},
    )


@pytest.fixture
def restored_world(
    world: World, database: Database, channel: grpc.Channel, gateway_process: GatewayProcess
) -> World:
    """`world` as it started: hostile calls may deactivate, demote or delete what it holds."""
    if not gateway_process.alive():
        pytest.fail(f"the gateway process is gone:\n{gateway_process.log()[-4000:]}")

    async def restore() -> None:
        async with database.sessions.begin() as session:
            for account in (world.user, world.admin):
                await session.execute(
                    update(User)
                    .where(User.id == account.id)
                    .values(role=str(account.role), is_active=True)
                )
                # A hostile but valid call (ChangePassword with the right
                # password, a deactivation) ends the world's sessions.
                await session.execute(
                    update(AuthSession)
                    .where(AuthSession.id == account.session_id)
                    .values(revoked_at=None, revoke_reason=None)
                )
            await session.execute(delete(SignInThrottle))
            post_id = uuid.UUID(world.post_id)
            if await session.get(Post, post_id) is None:
                session.add(Post(id=post_id, user_id=world.user.id, content=POST_CONTENT))

    database.run(restore())
    _await_accounts_served(channel, world)
    return world


def _await_accounts_served(channel: grpc.Channel, world: World) -> None:
    """Wait until the gateway's account cache has caught up with the restored rows."""
    get = channel.unary_unary(
        "/nuell.users.v1.UserService/GetCurrentUser",
        request_serializer=user_service_pb2.GetCurrentUserRequest.SerializeToString,
        response_deserializer=user_service_pb2.GetCurrentUserResponse.FromString,
    )
    expected = {"user": user_pb2.ROLE_USER, "admin": user_pb2.ROLE_ADMIN}
    deadline = time.monotonic() + 10
    for name, role in expected.items():
        while True:
            try:
                reply = get(
                    user_service_pb2.GetCurrentUserRequest(),
                    metadata=world.callers[name],
                    timeout=CALL_TIMEOUT_SECONDS,
                )
                if reply.user.role == role and reply.user.is_active:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"the {name} account was not restored in time"
            time.sleep(0.02)
