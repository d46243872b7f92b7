"""Every authenticated call needs the caller's current role, activity and
token generation, and whether its session is still live.

Reading them from PostgreSQL on every call would cost a query per call, so
each gateway process keeps them in memory and PostgreSQL tells it when one
changes: a trigger on `users` (migration 0003) sends the account id on the
`nuell_account_changed` channel, a trigger on `auth_sessions` (migration
0008) sends an ended session's id there too, and a LISTEN connection evicts
the entry.

- The process that makes a change (UpdateUser, DeactivateUser) evicts the
  entry itself before it answers, so its next call sees the change. Other
  processes see it when the notification arrives, within milliseconds.
- The listener's socket is also drained before every lookup, not only when
  the event loop gets round to it.
- While the listener is not connected, nothing is served from memory: every
  lookup reads the database, and the cache starts empty once it is back.
- Entries also expire after `TTL_SECONDS`, a bound on any surprise.
- A lookup that started before an eviction never stores its (possibly stale)
  answer: each eviction moves a generation counter on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from nuell_gateway.cancellation import reraise_if_cancelled
from nuell_gateway.db import hot_reads

logger = logging.getLogger(__name__)

CHANNEL = "nuell_account_changed"
TTL_SECONDS = 60.0
RECONNECT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class AccountState:
    role: str
    is_active: bool
    token_generation: int


class AccountStates:
    """role, is_active and token_generation per account id, cached and evicted on change."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConnection[Any]], conninfo: str) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._cache: dict[uuid.UUID, tuple[float, AccountState]] = {}
        # Live sessions only: an ended one is never cached, so it is refused
        # whatever happens to the cache.
        self._live_sessions: dict[uuid.UUID, float] = {}
        self._generation = 0
        self._listener: AsyncConnection[Any] | None = None
        # True while the listener is connected and its notifications trusted.
        self._listening = False
        # The listener's socket as registered with the event loop. Kept, not
        # asked for again: once libpq drops a dead connection the descriptor
        # is closed, and its number may already belong to another socket.
        self._reader_fd: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def state(self, user_id: uuid.UUID) -> AccountState | None:
        """The account's role and activity now; None if it does not exist."""
        self._drain()
        if self._listening:
            cached = self._cache.get(user_id)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        generation = self._generation
        row = await hot_reads.account_state(self._pool, user_id=user_id)
        state = (
            None
            if row is None
            else AccountState(role=row[0], is_active=row[1], token_generation=row[2])
        )
        if state is not None and self._listening and generation == self._generation:
            self._cache[user_id] = (time.monotonic() + TTL_SECONDS, state)
        return state

    async def session_is_live(self, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether the account's session has not been ended."""
        self._drain()
        if self._listening:
            expires = self._live_sessions.get(session_id)
            if expires is not None and expires > time.monotonic():
                return True
        generation = self._generation
        live = await hot_reads.session_is_live(self._pool, session_id=session_id, user_id=user_id)
        if live and self._listening and generation == self._generation:
            self._live_sessions[session_id] = time.monotonic() + TTL_SECONDS
        return live

    def evict(self, entity_id: uuid.UUID) -> None:
        """Forget an account or a session now: this process changed it (others
        hear of it by NOTIFY). Ids are UUIDs, so one name space serves both."""
        self._generation += 1
        self._cache.pop(entity_id, None)
        self._live_sessions.pop(entity_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening(), name="account-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _keep_listening(self) -> None:
        """Hold a LISTEN connection; reconnect after any failure."""
        while True:
            if not self._listening:
                await self._disconnect()
                try:
                    await self._connect()
                except psycopg.Error as exc:
                    reraise_if_cancelled()
                    logger.warning("account listener cannot connect: %s", type(exc).__name__)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _connect(self) -> None:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        await connection.execute(f"LISTEN {CHANNEL}")
        # Anything cached before may have missed an eviction.
        self._cache.clear()
        self._live_sessions.clear()
        self._listener = connection
        self._listening = True
        self._reader_fd = connection.pgconn.socket
        asyncio.get_running_loop().add_reader(self._reader_fd, self._drain)
        logger.info("account listener connected")

    def _forget(self) -> None:
        """Trust no cached entry: the listener is (or may be) gone."""
        if self._reader_fd is not None:
            asyncio.get_running_loop().remove_reader(self._reader_fd)
            self._reader_fd = None
        self._listening = False
        self._cache.clear()
        self._live_sessions.clear()
        self._generation += 1

    async def _disconnect(self) -> None:
        self._forget()
        connection, self._listener = self._listener, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def _drain(self) -> None:
        """Evict every account named in the notifications received so far."""
        if not self._listening or self._listener is None:
            return
        pgconn = self._listener.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError:
            # Gone: serve nothing from memory until the reconnect loop is back.
            logger.warning("account listener lost its connection")
            self._forget()
            return
        while (notification := pgconn.notifies()) is not None:
            with contextlib.suppress(ValueError):
                self.evict(uuid.UUID(notification.extra.decode()))
