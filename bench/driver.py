"""The load driver, in a process of its own so the client never shares an
interpreter with a server; requests serialized ahead, replies not parsed.
Closed loop: `concurrency` callers, each sending its next call when the last
one answers. Open loop: a call every 1/rate seconds whatever the stack does,
its latency counted from when it was due. Each step also gives each watched
process tree's CPU, per process with the connections it had accepted."""

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc  # type: ignore[import-untyped]
import psutil

from bench.scenarios import Call, Fixture, Load

# Separate channels, separate connections: grpc pools subchannels per process otherwise.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Plan:
    target: str  # host:port, plaintext h2c
    calls: tuple[Call, ...]
    load: Load
    fixture: Fixture
    watch: Mapping[str, int]  # name -> pid of a process tree whose CPU is reported
    balance_over: int | None = None  # a server whose workers share the port (open_channels)


class Record(NamedTuple):
    rpc: str
    due: float  # perf_counter seconds
    sent: float
    done: float
    code: str | None  # a failed call's status code name


def percentile(ascending: Sequence[float], p: float) -> float:
    """Nearest rank; NaN without samples."""
    return ascending[math.ceil(p / 100 * len(ascending)) - 1] if ascending else math.nan


def summarize(records: Sequence[Record], seconds: float) -> dict[str, Any]:
    ok = sorted(1000 * (r.done - r.due) for r in records if r.code is None)
    errors = Counter(r.code for r in records if r.code is not None)
    rps = len(ok) / seconds if seconds > 0 else math.nan
    figures = {"calls": len(records), "rps": rps, "errors": errors.total(), "error_codes": errors}
    return figures | {f"p{p}_ms": percentile(ok, p) for p in (50, 90, 99)}


def tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def tcp(process: psutil.Process) -> list[Any]:
    with contextlib.suppress(psutil.Error):
        return list(process.net_connections(kind="tcp"))
    return []


def accepted(process: psutil.Process) -> tuple[bool, set[int]]:
    """Whether it listens, and the peer ports of the connections it accepted."""
    connections = tcp(process)
    ports = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    established = (c for c in connections if c.status == psutil.CONN_ESTABLISHED and c.raddr)
    return bool(ports), {c.raddr.port for c in established if c.laddr.port in ports}


Snapshot = dict[str, dict[int, tuple[float, bool, int]]]  # name, pid: CPU s, listens, accepted


def snapshot(watch: Mapping[str, int]) -> Snapshot:
    found: Snapshot = {name: {} for name in watch}
    for name, pid in watch.items():
        for process in tree(pid):
            with contextlib.suppress(psutil.Error):  # it may exit while being read
                times, (listens, peers) = process.cpu_times(), accepted(process)
                found[name][process.pid] = (times.user + times.system, listens, len(peers))
    # Every thread of this process: grpc's own threads too.
    return found | {"client": {0: (time.process_time(), False, 0)}}


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
                pairs |= {(c.laddr, c.raddr) for c in tcp(process) if c.raddr}
        found["rss_mb"][name] = rss / 2**20
        found["private_mb"][name] = (rss - shared) / 2**20
        found["connections"][name] = len(pairs) + unix
    return found


async def open_channels(plan: Plan) -> list[Any]:
    """`plan.load.channels` ready channels, each its own connection. With
    `balance_over`, a connection the kernel hands to a worker that has its
    even share already is closed and dialled again: the figures then measure
    the server, not the placement."""
    port = int(plan.target.rsplit(":", 1)[1])
    workers = [p for p in tree(plan.balance_over) if accepted(p)[0]] if plan.balance_over else []
    share = math.ceil(plan.load.channels / max(1, len(workers)))
    placed: Counter[int] = Counter()
    channels: list[Any] = []
    redials = 0

    def mine() -> set[int]:
        return {c.laddr.port for c in tcp(psutil.Process()) if c.raddr and c.raddr.port == port}

    while len(channels) < plan.load.channels:
        channel, before = grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS), mine()
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        owner = next((w.pid for w in workers if (mine() - before) & accepted(w)[1]), 0)
        if len(workers) < 2 or placed[owner] < share or redials >= 50 * plan.load.channels:
            placed[owner] += 1
            channels.append(channel)
        else:
            redials += 1
            await channel.close()
    return channels


async def run(plan: Plan) -> dict[str, Any]:
    load, rng = plan.load, random.Random(plan.load.seed)  # noqa: S311 - a repeatable mix
    weighed = [(c, load.weights.get(c.name, 0) if load.weights else 1) for c in plan.calls]
    names, weights = zip(*[(call.name, weight) for call, weight in weighed if weight], strict=True)
    calls = [call for call in plan.calls if call.name in names]
    streams = {call.name: call.requests(plan.fixture, rng) for call in calls}
    bearer = (("authorization", f"Bearer {plan.fixture.access_token}"),)
    metadata = {call.name: bearer if call.authorized else () for call in calls}
    chains = {call.name: call.chain for call in calls}
    channels = await open_channels(plan)
    stubs = itertools.cycle([{c.name: ch.unary_unary(c.method) for c in calls} for ch in channels])
    ring = itertools.cycle(channels)

    async def opened() -> dict[str, bytes]:
        """A caller's own first request of each chained call, from its opener's reply."""
        found: dict[str, bytes] = {}
        for call in calls:
            if call.opener is not None and call.chain is not None:
                request = next(call.opener.requests(plan.fixture, rng))
                stub = next(ring).unary_unary(call.opener.method)
                found[call.name] = call.chain(await stub(request, timeout=load.timeout))
        return found

    async def one(due: float, chained: dict[str, bytes]) -> Record:
        name = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
        request = chained[name] if name in chained else next(streams[name])
        sent, code = time.perf_counter(), None
        try:
            reply = await next(stubs)[name](request, metadata=metadata[name], timeout=load.timeout)
            if chain := chains[name]:
                chained[name] = chain(reply)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        return Record(name, due, sent, time.perf_counter(), code)

    def step(records: list[Record], seconds: float, used: dict[str, Any]) -> dict[str, Any]:
        rpcs = {name: summarize([r for r in records if r.rpc == name], seconds) for name in names}
        return summarize(records, seconds) | {"rpcs": rpcs} | used

    async def closed() -> dict[str, Any]:
        start = time.perf_counter() + load.warmup
        end = start + load.duration
        records: list[Record] = []

        async def caller() -> None:
            chained = await opened()
            while (now := time.perf_counter()) < end:
                if start <= (record := await one(now, chained)).done < end:
                    records.append(record)

        async def window() -> dict[str, Any]:
            await asyncio.sleep(start - time.perf_counter())
            before = snapshot(plan.watch)
            await asyncio.sleep(end - time.perf_counter())
            return cpu(before, snapshot(plan.watch), load.duration)

        used, *_ = await asyncio.gather(window(), *(caller() for _ in range(load.concurrency)))
        return {"concurrency": load.concurrency} | step(records, load.duration, used)

    async def paced(rate: float, duration: float) -> dict[str, Any]:
        chained = await opened()  # one chain for the whole schedule
        before, start = snapshot(plan.watch), time.perf_counter() + 0.01
        tasks = []
        for due in (start + n / rate for n in range(max(1, round(rate * duration)))):
            await asyncio.sleep(due - time.perf_counter())
            tasks.append(asyncio.ensure_future(one(due, chained)))
        records: list[Record] = await asyncio.gather(*tasks)
        finished = time.perf_counter()
        used = cpu(before, snapshot(plan.watch), finished - start)
        span = max((r.done for r in records if r.code is None), default=finished) - start
        lag = percentile(sorted(1000 * (r.sent - r.due) for r in records), 99)
        found = {"offered_rps": rate, "send_lag_p99_ms": lag} | step(records, span, used)
        if load.bucket:  # the figures of each `bucket` seconds of the schedule too
            found["buckets"] = [
                {"t_s": t, "seconds": size}
                | summarize([r for r in records if t <= r.due - start < t + size], size)
                for t in (n * load.bucket for n in range(math.ceil(duration / load.bucket)))
                for size in [min(load.bucket, duration - t)]
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
                await asyncio.sleep(1 if n else 0)  # a pause between offered loads
                steps.append(await paced(rate, load.duration))
    finally:
        for channel in channels:
            await channel.close()
    return {"target": plan.target, "steps": steps}


def main(plan: Plan) -> dict[str, Any]:  # in the driver's process
    return asyncio.run(run(plan))
