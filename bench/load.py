"""Closed-loop unary gRPC load: C workers, each sending its next call as soon
as the previous one answers, for a warm-up and then a measured window.

    .venv/bin/python bench/load.py --target 127.0.0.1:50051 \\
        --method /grpc.health.v1.Health/Check --concurrency 32 --duration 5

bench/run.py starts it once per scenario, in a process of its own, so the
client never shares an interpreter (or a GIL) with a server. Requests are
pre-serialized bytes and replies are not parsed: the client spends as little
CPU per call as grpc.aio allows, leaving the rest of the machine to the
servers.

A call counts when it completes inside the measured window: its latency
(send to reply, in ms) if it succeeded, its status code if not. The result
is one JSON object (to `--out`, else stdout): calls, errors by code, RPS
(successful calls per second of window), latency percentiles, and the CPU
used during the window by this process and by each `--watch`ed process and
its descendants, as a percentage of one core, process by process, with the
connections each had accepted. The last shows how SO_REUSEPORT spread the
connections (and so the calls) over a server's worker processes;
`--balance-over` evens that spread out (see `open_channels`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import psutil

# Separate channels must not share one connection: grpc pools subchannels
# per process unless told otherwise.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Window:
    """The measured interval, in `time.perf_counter()` seconds."""

    start: float
    end: float


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls
    errors: Counter[str] = field(default_factory=Counter)  # status code name -> count


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0-100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Sample:
    """One process at one instant: CPU seconds so far, whether it listens on
    TCP (a server or one of its workers) and how many connections it has
    accepted (established on one of its listening ports)."""

    cpu_seconds: float
    listens: bool = False
    accepted: int = 0


def listening_and_accepted(process: psutil.Process) -> tuple[bool, int]:
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.Error:
        return False, 0
    listening = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
    accepted = sum(
        1 for c in connections if c.status == psutil.CONN_ESTABLISHED and c.laddr.port in listening
    )
    return bool(listening), accepted


def sample_tree(pid: int, *, connections: bool) -> dict[int, Sample]:
    """`pid` and each of its descendants, now (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    samples = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        listens, accepted = listening_and_accepted(process) if connections else (False, 0)
        samples[process.pid] = Sample(times.user + times.system, listens, accepted)
    return samples


def snapshot(watch: dict[str, int], *, connections: bool) -> dict[str, dict[int, Sample]]:
    samples = {name: sample_tree(pid, connections=connections) for name, pid in watch.items()}
    # Every thread of this process: grpc's own threads too.
    samples["client"] = {os.getpid(): Sample(time.process_time())}
    return samples


async def snapshot_at(
    when: float, watch: dict[str, int], *, connections: bool
) -> dict[str, dict[int, Sample]]:
    await asyncio.sleep(max(0.0, when - time.perf_counter()))
    return snapshot(watch, connections=connections)


def per_process(
    before: dict[str, dict[int, Sample]], after: dict[str, dict[int, Sample]], seconds: float
) -> dict[str, list[dict[str, Any]]]:
    """Per watched name, each process's share of one core over the window, and
    whether it listened and how many connections it had accepted at the start;
    busiest first."""
    shares: dict[str, list[dict[str, Any]]] = {}
    for name, now in after.items():
        then = before.get(name, {})
        rows = []
        for pid, sample in now.items():
            start = then.get(pid, Sample(0.0))
            used = 100 * (sample.cpu_seconds - start.cpu_seconds) / seconds
            rows.append(
                {"cpu_percent": used, "listens": start.listens, "connections": start.accepted}
            )
        shares[name] = sorted(rows, key=lambda row: -row["cpu_percent"])
    return shares


def metadata_item(text: str) -> tuple[str, str]:
    """`key=value`; a value `$NAME` is read from that environment variable, so
    secrets (a bearer token) stay out of the process list."""
    key, _, value = text.partition("=")
    if value.startswith("$"):
        try:
            value = os.environ[value[1:]]
        except KeyError:
            raise SystemExit(f"load: --metadata {key}: {value[1:]} is not set") from None
    return key.strip().lower(), value


def accepted_from(pid: int, port: int) -> set[int]:
    """The peers' ports of the connections `pid` accepted on `port`."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {
        c.raddr.port
        for c in connections
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.laddr.port == port
    }


def listening_workers(root: int, target: str) -> list[int]:
    """The processes under `root` that listen on `target`'s port."""
    port = int(target.rsplit(":", 1)[1])
    try:
        tree = psutil.Process(root)
        processes = [tree, *tree.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            found.append(process.pid)
    return found


async def open_channels(
    target: str, count: int, servers: list[int], channels: list[Any]
) -> dict[str, Any]:
    """Open `count` ready channels into `channels`, each its own connection.

    With several `servers` (worker processes sharing the port through
    SO_REUSEPORT, where the kernel places each connection at random), a
    connection that lands on a worker already holding its even share is
    closed and dialled again, so every worker serves the same number of
    connections: the figures then measure the server, not the placement.
    Returns the connections each worker got and the re-dials it took
    (empty without balancing).
    """
    port = int(target.rsplit(":", 1)[1])
    share = math.ceil(count / len(servers)) if len(servers) > 1 else count
    placed: Counter[int] = Counter()
    redials = 0
    while len(channels) < count:
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        before = set() if len(servers) < 2 else established_to(port)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        if len(servers) < 2:
            channels.append(channel)
            continue
        mine = established_to(port) - before
        owner = next(
            (pid for pid in servers if mine & accepted_from(pid, port)),
            None,
        )
        if owner is None or placed[owner] < share or redials >= 50 * count:
            placed[owner if owner is not None else 0] += 1
            channels.append(channel)
        else:
            redials += 1
            await channel.close()
    if len(servers) < 2:
        return {}
    return {"connections_per_worker": sorted(placed.values(), reverse=True), "redials": redials}


def established_to(port: int) -> set[int]:
    """Local ports of this process's established connections to `port`."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    }


async def worker(
    call: Any,
    requests: list[bytes],
    start: int,
    metadata: tuple[tuple[str, str], ...],
    call_timeout: float,
    window: Window,
    tally: Tally,
) -> None:
    """Sends `requests` in turn, from index `start`, one call at a time."""
    turn = start
    while True:
        sent = time.perf_counter()
        if sent >= window.end:
            return
        code = None
        request = requests[turn % len(requests)]
        turn += 1
        try:
            await call(request, metadata=metadata, timeout=call_timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        done = time.perf_counter()
        if window.start <= done < window.end:
            if code is None:
                tally.latencies.append(done - sent)
            else:
                tally.errors[code] += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    requests = [bytes.fromhex(text) for text in args.request_hex or [""]]
    metadata = tuple(metadata_item(item) for item in args.metadata)
    watch = {name: int(pid) for name, _, pid in (item.partition("=") for item in args.watch)}
    servers = listening_workers(watch[args.balance_over], args.target) if args.balance_over else []
    channels: list[Any] = []
    try:
        placement = await open_channels(args.target, args.channels, servers, channels)
        # No serializers: bytes go out as they are and replies stay bytes.
        calls = [channel.unary_unary(args.method) for channel in channels]
        begin = time.perf_counter()
        window = Window(begin + args.warmup, begin + args.warmup + args.duration)
        tally = Tally()
        first = asyncio.create_task(snapshot_at(window.start, watch, connections=True))
        last = asyncio.create_task(snapshot_at(window.end, watch, connections=False))
        await asyncio.gather(
            *(
                worker(
                    calls[i % len(calls)],
                    requests,
                    # Workers start apart, so calls in flight ask for different things.
                    i * len(requests) // args.concurrency,
                    metadata,
                    args.timeout,
                    window,
                    tally,
                )
                for i in range(args.concurrency)
            )
        )
        before, after = await first, await last
    finally:
        for channel in channels:
            await channel.close()

    processes = per_process(before, after, args.duration)
    latencies = sorted(tally.latencies)
    ms = [value * 1000 for value in latencies]
    return {
        "target": args.target,
        "method": args.method,
        "concurrency": args.concurrency,
        "channels": args.channels,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "ok": len(latencies),
        "errors": sum(tally.errors.values()),
        "error_codes": dict(tally.errors),
        "rps": len(latencies) / args.duration,
        "mean_ms": sum(ms) / len(ms) if ms else math.nan,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1] if ms else math.nan,
        "balance": placement,
        "cpu_percent": {
            name: sum(row["cpu_percent"] for row in rows) for name, rows in processes.items()
        },
        # Each process of each watched tree (a server and its workers, or
        # PostgreSQL's backends), busiest first.
        "processes": processes,
    }


def cpu_list(text: str) -> set[int]:
    try:
        cpus = {int(item) for item in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a comma-separated list of CPUs") from None
    if not cpus <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"{text!r}: not all of these CPUs are available")
    return cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port (plaintext)")
    parser.add_argument("--method", required=True, help="full method, /package.Service/Method")
    parser.add_argument(
        "--request-hex",
        action="append",
        help="serialized request, hex (default empty); repeated: each worker sends them in turn",
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sent with each call; VALUE `$NAME` reads the environment variable NAME",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="workers (calls in flight)")
    parser.add_argument("--channels", type=int, default=8, help="connections the workers share")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="also report this process's CPU (with its descendants) over the window",
    )
    parser.add_argument(
        "--balance-over",
        metavar="NAME",
        help="a --watch name whose worker processes share the target port: give each "
        "the same number of the client's connections, re-dialling as needed",
    )
    parser.add_argument(
        "--cpus",
        type=cpu_list,
        metavar="LIST",
        help="run only on these CPUs, e.g. `1` or `2,3` (default: wherever the kernel puts it)",
    )
    parser.add_argument("--out", type=Path, help="write the JSON result here (default stdout)")
    args = parser.parse_args(argv)
    watched = {item.partition("=")[0] for item in args.watch}
    if args.balance_over and args.balance_over not in watched:
        parser.error(f"--balance-over {args.balance_over}: not a --watch name")
    if args.concurrency < 1 or args.channels < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("concurrency and channels must be >= 1, duration > 0, warm-up >= 0")
    return args


def main() -> int:
    args = parse_args()
    if args.cpus:
        # Before grpc starts any thread: threads inherit their creator's CPUs.
        os.sched_setaffinity(0, args.cpus)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
