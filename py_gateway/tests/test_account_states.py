"""The per-process account cache: changes reach the next call, even if the listener dies."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from nuell.users.v1 import user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy import update
from sqlalchemy.engine import URL

from nuell_gateway.db.models import User
from nuell_gateway.resources import Resources
from tests.utils.database import libpq
from tests.utils.factories import bearer, make_user


async def _get_me(users: UserServiceStub, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        await users.GetCurrentUser(user_service_pb2.GetCurrentUserRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _eventually(
    users: UserServiceStub, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    """Notifications travel asynchronously: allow them a moment, never a stale answer for long."""
    for _ in range(100):
        if await _get_me(users, metadata) == code:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"still not {code.name} after 1 s")


async def _listener_backends(database_url: URL) -> int:
    async with await psycopg.AsyncConnection.connect(libpq(database_url), autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN nuell_account_changed'"
            " AND datname = current_database()"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_change_made_in_sql_reaches_the_gateway(
    users: UserServiceStub, resources: Resources
) -> None:
    alice = await make_user(resources.sessions)
    metadata = bearer(resources.access_tokens, alice)
    assert await _get_me(users, metadata) == grpc.StatusCode.OK  # now cached
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(is_active=False))
    await _eventually(users, metadata, grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.usefixtures("gateway")
async def test_a_lost_listener_serves_nothing_stale_and_comes_back(
    users: UserServiceStub, resources: Resources, database_url: URL
) -> None:
    alice = await make_user(resources.sessions)
    metadata = bearer(resources.access_tokens, alice)
    assert await _get_me(users, metadata) == grpc.StatusCode.OK  # now cached

    async with await psycopg.AsyncConnection.connect(libpq(database_url), autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query = 'LISTEN nuell_account_changed' AND datname = current_database()"
        )
    # The change happens while no gateway is listening for it...
    async with resources.sessions.begin() as session:
        await session.execute(update(User).where(User.id == alice.id).values(is_active=False))
    # ...and is still seen: a lost listener means nothing is served from memory.
    await _eventually(users, metadata, grpc.StatusCode.UNAUTHENTICATED)

    for _ in range(50):  # the listener reconnects by itself
        if await _listener_backends(database_url) >= 1:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the account listener did not reconnect")
