"""Prometheus metrics, served at NUELL_METRICS_ADDR (127.0.0.1:9464) on /metrics.

With several worker processes, every worker records into files under a
private folder (prometheus_client's multiprocess mode) and the supervisor
serves their sum, so one scrape sees the whole gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

RPC_REQUESTS = Counter(
    "nuell_gateway_rpc_requests_total",
    "Calls answered, by method and gRPC status code.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "nuell_gateway_rpc_duration_seconds",
    "Time from a call's arrival to its answer, by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_POOL_CONNECTIONS = Gauge(
    "nuell_gateway_db_pool_connections",
    "Database connections by pool (orm, hot_reads) and state (in_use, idle).",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
POST_READ_BATCH = Histogram(
    "nuell_gateway_post_read_batch_size",
    "Posts asked for by one batched read (GetPost and the checks before writes).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100),
)
COMPUTE_ERRORS = Counter(
    "nuell_gateway_compute_errors_total",
    "Calls to rust_compute that failed, by the reason the gateway answered with.",
    ["reason"],
)

WATCH_STREAMS = Gauge(
    "nuell_gateway_watch_streams",
    "WatchPosts streams open now.",
    multiprocess_mode="livesum",
)
WATCH_EVENTS = Counter(
    "nuell_gateway_watch_events_total",
    "Post events handed to WatchPosts streams (one per stream that receives it).",
)
WATCH_LAG = Histogram(
    "nuell_gateway_watch_lag_seconds",
    "From an event's commit to the reader handing it to the streams.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
WATCH_ENDED = Counter(
    "nuell_gateway_watch_ended_total",
    "WatchPosts streams the gateway ended, by reason (WATCHER_TOO_SLOW, SHUTTING_DOWN).",
    ["reason"],
)
MAIL_SENT = Counter("nuell_gateway_mail_sent_total", "Mails handed to SMTP, by kind.", ["kind"])
MAIL_RETRIED = Counter(
    "nuell_gateway_mail_retried_total",
    "Attempts to send a mail that failed and will be retried, by kind.",
    ["kind"],
)
MAIL_FAILED = Counter(
    "nuell_gateway_mail_failed_total",
    "Mails given up after NUELL_MAIL_MAX_ATTEMPTS attempts, by kind.",
    ["kind"],
)
MAIL_OUTBOX_DEPTH = Gauge(
    "nuell_gateway_mail_outbox_depth",
    "Mails waiting in the outbox, as last seen by a sender.",
    multiprocess_mode="max",
)


@contextlib.contextmanager
def multiprocess_recording() -> Iterator[None]:
    """While workers run: a private folder for them to record into, removed after."""
    if MULTIPROCESS_ENV in os.environ:  # the operator chose one
        yield
        return
    folder = tempfile.mkdtemp(prefix="nuell-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def serve_metrics(address: str) -> Callable[[], None]:
    """Serve /metrics on `address`; returns the function that stops it."""
    host, _, port = address.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if MULTIPROCESS_ENV in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server: WSGIServer
    thread: threading.Thread
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


POOL_REPORT_SECONDS = 5.0


async def report_pool_use(engine: AsyncEngine, hot_reads: AsyncConnectionPool[Any]) -> None:
    """Forever: publish how many connections each pool has in use and idle."""
    while True:
        orm_pool: Any = engine.sync_engine.pool
        DB_POOL_CONNECTIONS.labels(pool="orm", state="in_use").set(orm_pool.checkedout())
        DB_POOL_CONNECTIONS.labels(pool="orm", state="idle").set(orm_pool.checkedin())
        stats = hot_reads.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        DB_POOL_CONNECTIONS.labels(pool="hot_reads", state="in_use").set(size - idle)
        DB_POOL_CONNECTIONS.labels(pool="hot_reads", state="idle").set(idle)
        await asyncio.sleep(POOL_REPORT_SECONDS)
