"""The load driver: one run of a scenario's calls against one address, in a
process of its own, so the client never shares an interpreter with a server.

Closed loop: `concurrency` callers, each sending its next call as soon as the
previous one answers; a call counts if it completes inside the measured
window. Open loop: calls sent every 1/rate seconds whatever the stack does,
each on a task of its own, every one waited for; latency runs from the
call's *scheduled* send, so a client that falls behind shows as latency.
Requests are serialized ahead and replies are not parsed, so the client
spends as little CPU per call as grpc.aio allows.

Each step reports calls, RPS, latency percentiles, errors by code, per RPC,
and the CPU each watched process tree used (per process, with the
connections each had accepted: how SO_REUSEPORT spread them over a server's
workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import grpc  # type: ignore[import-untyped]
import psutil

from bench.scenarios import Call, Fixture, Load

# Separate channels must not share one connection: grpc pools subchannels
# per process unless told otherwise.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Plan:
    target: str  # host:port, plaintext h2c
    calls: tuple[Call, ...]
    load: Load
    fixture: Fixture
    watch: Mapping[str, int]  # name -> pid of a process tree whose CPU is reported
    channels: int
    seed: int
    # A server whose worker processes share the target port: each gets the
    # same number of the client's connections (see open_channels).
    balance_over: int | None = None


class Record(NamedTuple):
    rpc: str
    due: float  # perf_counter seconds
    sent: float
    done: float
    code: str | None  # a failed call's status code name


def percentile(ascending: Sequence[float], p: float) -> float:
    """Nearest rank; NaN without samples."""
    if not ascending:
        return math.nan
    return ascending[max(1, math.ceil(p / 100 * len(ascending))) - 1]


def summarize(records: Sequence[Record], seconds: float) -> dict[str, Any]:
    ok = sorted(1000 * (r.done - r.due) for r in records if r.code is None)
    errors = Counter(r.code for r in records if r.code is not None)
    return {
        "calls": len(records),
        "ok": len(ok),
        "rps": len(ok) / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(ok, 50),
        "p90_ms": percentile(ok, 90),
        "p99_ms": percentile(ok, 99),
        "max_ms": ok[-1] if ok else math.nan,
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
    }


# --- what the processes use ---------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tcp(process: psutil.Process) -> list[Any]:
    try:
        return list(process.net_connections(kind="tcp"))
    except psutil.Error:
        return []


def accepted(process: psutil.Process) -> tuple[bool, set[int]]:
    """Whether it listens, and the peer ports of connections it accepted."""
    connections = tcp(process)
    ports = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    peers = {
        c.raddr.port
        for c in connections
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.laddr.port in ports
    }
    return bool(ports), peers


Snapshot = dict[str, dict[int, tuple[float, bool, int]]]  # name -> pid -> cpu s, listens, accepted


def snapshot(watch: Mapping[str, int]) -> Snapshot:
    found: Snapshot = {}
    for name, pid in watch.items():
        found[name] = {}
        for process in tree(pid):
            try:
                times = process.cpu_times()
            except psutil.Error:  # exited between listing and reading
                continue
            listens, peers = accepted(process)
            found[name][process.pid] = (times.user + times.system, listens, len(peers))
    # Every thread of this process: grpc's own threads too.
    found["client"] = {0: (time.process_time(), False, 0)}
    return found


def cpu(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, Any]:
    """Per name, its share of one core over the window, in all and per process
    (busiest first, with the connections it had accepted at the start)."""
    processes = {}
    for name, now in after.items():
        rows = []
        for pid, (used, _, _) in now.items():
            start, listens, connections = before[name].get(pid, (0.0, False, 0))
            share = 100 * (used - start) / seconds
            rows.append({"cpu_percent": share, "listens": listens, "connections": connections})
        processes[name] = sorted(rows, key=lambda row: -row["cpu_percent"])
    total = {name: sum(row["cpu_percent"] for row in rows) for name, rows in processes.items()}
    return {"cpu_percent": total, "processes": processes}


def memory(watch: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Per process tree: RSS and private memory (RSS less shared pages) in MB,
    and open connections: TCP in any state but LISTEN (once per tree) and Unix
    sockets (how the embedded PostgreSQL is reached)."""
    found: dict[str, dict[str, float]] = {"rss_mb": {}, "private_mb": {}, "connections": {}}
    for name, pid in watch.items():
        rss = shared = unix = 0
        pairs: set[tuple[Any, Any]] = set()
        for process in tree(pid):
            with contextlib.suppress(psutil.Error):
                info = process.memory_info()
                rss, shared = rss + info.rss, shared + getattr(info, "shared", 0)
                unix += len(process.net_connections(kind="unix"))
                pairs |= {
                    (c.laddr, c.raddr) for c in tcp(process) if c.status != psutil.CONN_LISTEN
                }
        found["rss_mb"][name] = rss / 2**20
        found["private_mb"][name] = (rss - shared) / 2**20
        found["connections"][name] = len(pairs) + unix
    return found


# --- the load -----------------------------------------------------------------------


async def open_channels(plan: Plan) -> tuple[list[Any], dict[str, Any]]:
    """`plan.channels` ready channels, each its own connection. With
    `balance_over`, a connection the kernel hands to a worker that already
    has its even share is closed and dialled again: the figures then measure
    the server, not the placement."""
    port = int(plan.target.rsplit(":", 1)[1])
    workers = [p for p in tree(plan.balance_over) if accepted(p)[0]] if plan.balance_over else []
    share = math.ceil(plan.channels / max(1, len(workers)))
    placed: Counter[int] = Counter()
    channels: list[Any] = []
    redials = 0
    while len(channels) < plan.channels:
        channel = grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS)
        before = {c.laddr.port for c in tcp(psutil.Process()) if c.raddr and c.raddr.port == port}
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        mine = {c.laddr.port for c in tcp(psutil.Process()) if c.raddr and c.raddr.port == port}
        owner = next((w.pid for w in workers if (mine - before) & accepted(w)[1]), 0)
        if len(workers) < 2 or placed[owner] < share or redials >= 50 * plan.channels:
            placed[owner] += 1
            channels.append(channel)
        else:
            redials += 1
            await channel.close()
    found = {"connections_per_worker": sorted(placed.values(), reverse=True), "redials": redials}
    return channels, found if len(workers) > 1 else {}


async def run(plan: Plan) -> dict[str, Any]:
    load, rng = plan.load, random.Random(plan.seed)  # noqa: S311 - a repeatable mix
    weights = [load.weights.get(call.name, 0) if load.weights else 1 for call in plan.calls]
    calls = [call for call, weight in zip(plan.calls, weights, strict=True) if weight]
    weights = [weight for weight in weights if weight]
    streams = {call.name: call.requests(plan.fixture, rng) for call in calls}
    bearer = (("authorization", f"Bearer {plan.fixture.access_token}"),)
    metadata = {call.name: bearer if call.authorized else () for call in calls}
    channels, balance = await open_channels(plan)
    stubs = itertools.cycle([{c.name: ch.unary_unary(c.method) for c in calls} for ch in channels])
    names = [call.name for call in calls]

    async def one(due: float) -> Record:
        name = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
        request, sent, code = next(streams[name]), time.perf_counter(), None
        try:
            await next(stubs)[name](request, metadata=metadata[name], timeout=load.timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        return Record(name, due, sent, time.perf_counter(), code)

    def step(records: list[Record], seconds: float, used: dict[str, Any]) -> dict[str, Any]:
        rpcs = {name: summarize([r for r in records if r.rpc == name], seconds) for name in names}
        return summarize(records, seconds) | {"rpcs": rpcs} | used

    async def closed() -> dict[str, Any]:
        begin = time.perf_counter()
        start, end = begin + load.warmup, begin + load.warmup + load.duration
        records: list[Record] = []

        async def caller() -> None:
            while (now := time.perf_counter()) < end:
                if start <= (record := await one(now)).done < end:
                    records.append(record)

        async def window() -> dict[str, Any]:
            await asyncio.sleep(start - time.perf_counter())
            before = snapshot(plan.watch)
            await asyncio.sleep(end - time.perf_counter())
            return cpu(before, snapshot(plan.watch), load.duration)

        used, *_ = await asyncio.gather(window(), *(caller() for _ in range(load.concurrency)))
        return {"concurrency": load.concurrency} | step(records, load.duration, used)

    async def paced(rate: float, duration: float) -> dict[str, Any]:
        before = snapshot(plan.watch)
        start = time.perf_counter() + 0.01
        tasks = []
        for n in range(max(1, round(rate * duration))):
            if (wait := start + n / rate - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.ensure_future(one(start + n / rate)))
        records: list[Record] = await asyncio.gather(*tasks)
        finished = time.perf_counter()
        used = cpu(before, snapshot(plan.watch), finished - start)
        span = max((r.done for r in records if r.code is None), default=finished) - start
        lag = sorted(1000 * (r.sent - r.due) for r in records)
        found: dict[str, Any] = {"offered_rps": rate, "send_lag_p99_ms": percentile(lag, 99)}
        found |= step(records, span, used)
        if load.bucket:
            found["buckets"] = [
                {"t_s": t, "seconds": min(load.bucket, duration - t)}
                | summarize(
                    [r for r in records if t <= r.due - start < t + load.bucket],
                    min(load.bucket, duration - t),
                )
                for t in itertools.takewhile(
                    lambda t: t < duration, itertools.count(0, load.bucket)
                )
            ]
        return found

    try:
        if load.concurrency:
            steps = [await closed()]
        else:
            if load.warmup:
                await paced(load.rates[0], load.warmup)
            steps = []
            for n, rate in enumerate(load.rates):
                await asyncio.sleep(load.pause if n else 0)
                steps.append(await paced(rate, load.duration))
    finally:
        for channel in channels:
            await channel.close()
    return {"target": plan.target, "channels": plan.channels, "balance": balance, "steps": steps}


def main(plan: Plan, results: Connection) -> None:
    """The load driver process: runs `plan`, sends its figures back."""
    results.send(asyncio.run(run(plan)))
