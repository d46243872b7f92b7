"""Fixtures: a real PostgreSQL, a migrated database per session, a gateway per test.

The database server is TEST_DATABASE_URL, else DATABASE_URL, else an
embedded PostgreSQL in a scratch folder. The session migrates one throwaway
database on it; every test that touches data starts from empty tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from nuell.auth.v1 import auth_service_pb2_grpc
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from nuell.users.v1 import user_service_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from nuell_gateway.config import Settings
from nuell_gateway.db.models import Base
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.utils.compute import RustCompute
from tests.utils.database import scratch_dir, server_url, throwaway_database
from tests.utils.factories import TestUser, make_user

# Two keys: the first signs, the second is still accepted (rotation).
TEST_JWT_KEYS = "k2026:" + "s" * 40 + ",k2025:" + "o" * 40
TEST_TOTP_KEYS = "t2026:" + "t" * 40 + ",t2025:" + "u" * 40


@pytest.fixture(scope="session")
def database_server() -> URL:
    return server_url(scratch_dir())


@pytest.fixture(scope="session")
def database_url(database_server: URL) -> Iterator[URL]:
    """A migrated database for this test session (psycopg 3 driver)."""
    with throwaway_database(database_server) as url:
        url = url.set(drivername="postgresql+psycopg")
        upgrade_to_head(url)
        yield url


@pytest.fixture(scope="session")
def compute_address() -> Iterator[str]:
    """The real rust_compute on a free port, for the whole session."""
    try:
        compute = RustCompute().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield compute.address
    compute.stop()


# Where in-process gateways look for rust_compute; set by the autouse fixture
# below, so every gateway a test starts talks to the real service.
_compute_target = "127.0.0.1:50052"


@pytest.fixture(scope="session", autouse=True)
def _point_gateways_at_compute(compute_address: str) -> None:
    global _compute_target
    _compute_target = compute_address


def make_settings(database_url: URL, **overrides: object) -> Settings:
    """Settings for an in-process gateway on a free port."""
    values: dict[str, object] = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "gateway_addr": "127.0.0.1:0",
        "compute_target": _compute_target,
        "shutdown_grace_seconds": 2.0,
        "jwt_keys": TEST_JWT_KEYS,
        "totp_keys": TEST_TOTP_KEYS,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
async def empty_tables(database_url: URL) -> None:
    """Start the test with every table empty."""
    engine = create_async_engine(database_url)
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    await engine.dispose()


@pytest.fixture
async def gateway(database_url: URL, empty_tables: None) -> AsyncIterator[Gateway]:
    """A real gateway in this process, on a free port."""
    running = await Gateway.start(make_settings(database_url))
    yield running
    await running.stop()


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as open_channel:
        yield open_channel


@pytest.fixture
def resources(gateway: Gateway) -> Resources:
    return gateway.resources


@pytest.fixture
def auth(channel: grpc.aio.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture
def users(channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture
def posts(channel: grpc.aio.Channel) -> PostServiceStub:
    return PostServiceStub(channel)


@pytest.fixture
async def alice(resources: Resources) -> TestUser:
    """An ordinary, verified user."""
    return await make_user(resources.sessions)


@pytest.fixture
async def bob(resources: Resources) -> TestUser:
    """Another one."""
    return await make_user(resources.sessions)
