"""WatchPosts: the post event log (migration 0006), fanned out to streams.

One `PostEventLog` per gateway process holds one LISTEN connection and one
reader. NOTIFY only wakes the reader (and it reads every second anyway, so
a notification lost while the listener reconnects costs a second, never an
event); the reader takes the new rows of `post_events` in `seq` order, one
query per batch, builds each event's message once and hands it to every
stream that may see it. No stream holds a connection or runs a query per
event: a resuming stream reads its backlog once, in pages.

A resume token names a position in the log (`seq`) and a time before
which nothing after that position was committed, signed like page tokens.
Every event up to the position has been delivered to the stream or was not
for it, so resuming after it loses nothing and repeats nothing, on any
process: a process whose reader is behind the token skips what the stream
has already seen. The time is what retention is checked against: a token
whose time is past it may have lost events to the pruning (OUT_OF_RANGE).

Each stream buffers at most `watch_buffer_events`; one that falls further
behind is ended with RESOURCE_EXHAUSTED (WATCHER_TOO_SLOW) and the token to
resume from, so a slow reader costs the others nothing. Shutdown ends every
stream with UNAVAILABLE and its token; a stream also ends (UNAUTHENTICATED)
within `watch_auth_check_seconds` of its access token expiring or its
account being deactivated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1.post_pb2 import Post
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from nuell_gateway.authz import Caller, Scope
from nuell_gateway.cancellation import cancel_and_wait, reraise_if_cancelled
from nuell_gateway.config import Settings
from nuell_gateway.convert import post_fields, time_fields
from nuell_gateway.db.hot_reads import PostRow
from nuell_gateway.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from nuell_gateway.metrics import WATCH_ENDED, WATCH_EVENTS, WATCH_LAG, WATCH_STREAMS
from nuell_gateway.pagination import PageTokens

logger = logging.getLogger(__name__)

CHANNEL = "nuell_post_events"
READ_BATCH = 500
POLL_SECONDS = 1.0  # the reader reads this often even without a notification
RECONNECT_SECONDS = 1.0
PRUNE_SECONDS = 300.0
TOKEN_SCOPE = "watch posts"  # noqa: S105 - what a token is for, not a secret

TYPES = {
    "created": pb.POST_EVENT_TYPE_CREATED,
    "updated": pb.POST_EVENT_TYPE_UPDATED,
    "deleted": pb.POST_EVENT_TYPE_DELETED,
    "analyzed": pb.POST_EVENT_TYPE_ANALYZED,
}
# The columns of PostRow, from the event's copy of the post, then the event's own;
# times as microseconds since the epoch, as hot_reads reads them.
EVENTS_SQL = (
    "SELECT e.post_id::text, e.user_id::text, e.content, "
    "(extract(epoch FROM e.created_at) * 1000000)::int8, "
    "(extract(epoch FROM e.updated_at) * 1000000)::int8, e.version, "
    "e.analysis_state, e.word_count, e.reading_time_seconds, e.simhash, e.seq, e.type, "
    "(extract(epoch FROM e.event_time) * 1000000)::int8, coalesce(u.is_active, false) "
    "FROM post_events e LEFT JOIN users u ON u.id = e.user_id "
    "WHERE e.seq > %(after)s AND e.seq <= %(upto)s ORDER BY e.seq LIMIT %(limit)s"
)
LAST_SEQ_SQL = "SELECT coalesce(max(seq), 0) FROM post_events"
PRUNE_SQL = "DELETE FROM post_events WHERE event_time < now() - make_interval(secs => %(secs)s)"


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    committed: float  # time.time() of its commit
    author_id: str
    author_active: bool
    message: pb.PostEvent


class Watcher:
    """One open stream: its filter, its buffer and how far it has got."""

    def __init__(
        self, log: PostEventLog, caller: Caller, author_id: str, after: int, since: float
    ) -> None:
        self.log, self.caller, self.author_id = log, caller, author_id
        self.after = after  # events up to here are the client's already
        self.through = after  # every event up to here is queued, sent or not for it
        self.sent_through, self.sent_since = after, since  # ... and every one up to here sent
        self.queue: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.ending: Callable[[str], DomainError] | None = None

    def wants(self, event: Event) -> bool:
        return (
            event.seq > self.after
            and (not self.author_id or event.author_id == self.author_id)
            and (event.author_active or self.caller.has(Scope.POSTS_MODERATE))
        )

    def offer(self, event: Event) -> None:
        if self.ending is not None:
            return
        if self.wants(event):
            if len(self.queue) >= self.log.settings.watch_buffer_events:
                self.end(WATCHER_TOO_SLOW)
                return
            self.queue.append(event)
            self.wake.set()
            WATCH_EVENTS.inc()
        self.through = max(self.through, event.seq)

    def end(self, error: Callable[[str], DomainError]) -> None:
        if self.ending is None:
            self.ending = error
            self.wake.set()
            WATCH_ENDED.labels(error.__name__).inc()

    def sent(self, seq: int, since: float) -> None:
        self.sent_through, self.sent_since = seq, since

    def token(self) -> str:
        """Resumes after everything this stream has sent (or skipped)."""
        return self.log.token(self.sent_through, self.sent_since)


def WATCHER_TOO_SLOW(token: str) -> DomainError:
    return ResourceExhausted(
        "the stream fell too far behind; resume with the resume token",
        reason="WATCHER_TOO_SLOW",
        metadata={"resumeToken": token},
    )


def SHUTTING_DOWN(token: str) -> DomainError:
    return Unavailable(
        "the server is shutting down; resume with the resume token",
        reason="SHUTTING_DOWN",
        metadata={"resumeToken": token},
    )


def _bad_token() -> InvalidArgument:
    return InvalidArgument(
        "resume_token is not a token WatchPosts issued",
        reason="INVALID_RESUME_TOKEN",
        violations=[
            FieldViolation(
                field="resume_token",
                description="not a resume token from this service",
                reason="INVALID_RESUME_TOKEN",
            )
        ],
    )


@dataclass
class PostEventLog:
    """The process's one reader of `post_events`, shared by all its streams."""

    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection[Any]]
    conninfo: str
    tokens: PageTokens
    position: int = 0  # the last seq read and handed out
    read_at: float = 0.0  # when a read began that found the log complete up to `position`
    watchers: set[Watcher] = field(default_factory=set)
    per_user: Counter[uuid.UUID] = field(default_factory=Counter)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _started: bool = False

    def token(self, seq: int, since: float) -> str:
        """Resumes after `seq`; every later event was committed after `since`, which is
        what retention is checked against (no event after `seq` can have been pruned
        while `since` is within it)."""
        return self.tokens.encode({"q": seq, "t": int(since)}, scope=TOKEN_SCOPE)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="post-events-listener"),
            asyncio.create_task(self._read_forever(), name="post-events-reader"),
            asyncio.create_task(self._prune_forever(), name="post-events-retention"),
        ]

    def shut_down(self) -> None:
        """End every stream with UNAVAILABLE and its token (the server is stopping)."""
        for watcher in self.watchers:
            watcher.end(SHUTTING_DOWN)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    async def watch(
        self,
        caller: Caller,
        *,
        author_id: str,
        resume_token: str,
        still_allowed: Callable[[], Awaitable[Caller]],
        opened: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[pb.PostEvent]:
        """The stream of one WatchPosts call; `opened` runs once it is registered
        (the servicer sends the response headers then, so a client knows)."""
        after, since = await self._resume_position(resume_token)
        if len(self.watchers) >= self.settings.watch_max_streams:
            raise ResourceExhausted(
                "this server has as many open streams as it takes; retry later",
                reason="TOO_MANY_WATCHERS",
                metadata={"limit": str(self.settings.watch_max_streams)},
            )
        if self.per_user[caller.user_id] >= self.settings.watch_max_streams_per_user:
            raise ResourceExhausted(
                "you have as many open streams as one account may; close one first",
                reason="TOO_MANY_WATCHERS",
                metadata={"limit": str(self.settings.watch_max_streams_per_user)},
            )
        watcher = Watcher(self, caller, author_id, after, since)
        upto, upto_since = self.position, self.read_at
        self.watchers.add(watcher)
        self.per_user[caller.user_id] += 1
        WATCH_STREAMS.inc()
        try:
            if opened is not None:
                await opened()
            async for message in self._stream(watcher, upto, upto_since, still_allowed):
                yield message
        finally:
            self.watchers.discard(watcher)
            WATCH_STREAMS.dec()
            self.per_user[caller.user_id] -= 1
            if not self.per_user[caller.user_id]:
                del self.per_user[caller.user_id]

    async def _resume_position(self, resume_token: str) -> tuple[int, float]:
        """Where a stream begins, and since when the log holds everything after it."""
        if not self._started:  # the reader has not found the log's end yet
            await self._catch_up()
        if not resume_token:
            return self.position, self.read_at  # from now on
        try:
            cursor = self.tokens.decode(resume_token, scope=TOKEN_SCOPE)
            seq, issued = int(cursor["q"]), int(cursor["t"])
        except (InvalidArgument, KeyError, TypeError, ValueError):
            raise _bad_token() from None
        retention = self.settings.post_events_retention_hours * 3600
        if issued < time.time() - retention:
            raise OutOfRange(
                "the resume token is older than the event log keeps; list the posts again",
                reason="RESUME_TOKEN_EXPIRED",
                metadata={"retentionHours": f"{self.settings.post_events_retention_hours:g}"},
            )
        return seq, issued

    async def _stream(
        self,
        watcher: Watcher,
        upto: int,
        upto_since: float,
        still_allowed: Callable[[], Awaitable[Caller]],
    ) -> AsyncIterator[pb.PostEvent]:
        settings = self.settings
        # The backlog of a resumed stream, read once, in pages; live events queue meanwhile.
        after = watcher.after
        while after < upto and watcher.ending is None:
            events = await self._read(after, upto)
            if not events:
                break
            for event in events:
                if watcher.wants(event):
                    watcher.sent(event.seq, event.committed)
                    yield event.message
            after = events[-1].seq
        if watcher.ending is None and upto > watcher.sent_through:  # the backlog is all sent
            watcher.sent(upto, upto_since)
            watcher.through = max(watcher.through, upto)
        quiet_since = checked_at = time.monotonic()
        while True:
            if watcher.ending is not None:
                raise watcher.ending(watcher.token())
            now = time.monotonic()
            if now - checked_at >= settings.watch_auth_check_seconds:
                watcher.caller, checked_at = await still_allowed(), now
            if watcher.queue:
                event = watcher.queue.popleft()
                watcher.sent(event.seq, event.committed)
                quiet_since = now
                yield event.message
                continue
            watcher.sent(watcher.through, self.read_at)  # through is where the reader is
            if now - quiet_since >= settings.watch_heartbeat_seconds:
                quiet_since = now
                yield pb.PostEvent(
                    type=pb.POST_EVENT_TYPE_HEARTBEAT,
                    resume_token=watcher.token(),
                    event_time=Timestamp(**time_fields(time.time_ns() // 1000)),
                )
                continue
            watcher.wake.clear()
            wait = min(
                settings.watch_heartbeat_seconds - (now - quiet_since),
                settings.watch_auth_check_seconds - (now - checked_at),
            )
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await watcher.wake.wait()

    async def _read(self, after: int, upto: int | None = None) -> list[Event]:
        bounds = {"after": after, "upto": upto or 2**62, "limit": READ_BATCH}
        async with self.pool.connection() as connection:
            cursor = await connection.execute(EVENTS_SQL, bounds, prepare=True)
            rows = await cursor.fetchall()
        events = []
        for row in rows:
            seq, kind, time_us, active = row[10:]
            message = pb.PostEvent(
                type=TYPES[kind],
                post=None if kind == "deleted" else Post(**post_fields(PostRow(*row[:10]))),
                post_id=row[0],
                resume_token=self.token(seq, time_us / 1e6),
                event_time=Timestamp(**time_fields(time_us)),
            )
            events.append(Event(seq, time_us / 1e6, row[1], active, message))
        return events

    async def _catch_up(self) -> None:
        """Where the log ends now, without reading it (no stream needs its events)."""
        began = time.time()
        async with self.pool.connection() as connection:
            cursor = await connection.execute(LAST_SEQ_SQL)
            row = await cursor.fetchone()
        last = int(row[0]) if row else 0
        # A stream that opened meanwhile began at the old position: it must be read from.
        if last >= self.position and not self.watchers:
            self.position, self.read_at, self._started = last, max(self.read_at, began), True

    async def _listen(self) -> None:
        """Hold a LISTEN connection that wakes the reader; reconnect after any failure."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # whatever came while nobody listened
                    async for _ in connection.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                reraise_if_cancelled()
                logger.warning("post event listener: %s", type(exc).__name__)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _read_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if not self.watchers:  # nobody to tell: only follow where the log ends
                    await self._catch_up()
                    if not self.watchers:  # else one came meanwhile: read on from here
                        continue
                began = time.time()
                while events := await self._read(self.position):
                    committed = events[-1].message.event_time.ToNanoseconds() / 1e9
                    WATCH_LAG.observe(max(0.0, time.time() - committed))
                    for event in events:
                        for watcher in list(self.watchers):
                            watcher.offer(event)
                        self.position = event.seq
                    if len(events) < READ_BATCH:
                        break
                self.read_at = began
            except (psycopg.Error, PoolTimeout) as exc:
                reraise_if_cancelled()
                logger.warning("post event reader: %s", type(exc).__name__)

    async def _prune_forever(self) -> None:
        """Drop events past the retention (every process does; it costs one DELETE)."""
        secs = self.settings.post_events_retention_hours * 3600
        while True:
            try:
                async with self.pool.connection() as connection:
                    await connection.execute(PRUNE_SQL, {"secs": secs})
            except (psycopg.Error, PoolTimeout) as exc:
                reraise_if_cancelled()
                logger.warning("post event retention: %s", type(exc).__name__)
            await asyncio.sleep(PRUNE_SECONDS)
