"""A weighted mix of the stack's RPCs, the way a client population calls them.

    .venv/bin/python bench/mix.py --target 127.0.0.1:8080 --post-ids ids.txt \\
        --login-email someone@example.com --mode closed --concurrency 32 --duration 10

Each call picks its RPC by weight from a seeded RNG (default: 5% Login,
60% ListPosts with a page of 20, 20% GetPost of a random known post,
10% CreatePost with content no earlier post shares, 5% Analyze of about
500 characters). Authenticated calls carry `authorization` from the
environment variable NUELL_BENCH_AUTHORIZATION; Login's password comes
from NUELL_BENCH_PASSWORD. Neither appears in the process list.

Two modes:

- `closed`: `--concurrency` callers, each sending its next call as soon as
  the previous one answers, for `--warmup` and then `--duration` seconds
  (as bench/load.py). A call counts if it completes inside the window.
- `open`: a constant arrival rate, whatever the server does: for each rate
  in `--rates`, calls are sent every 1/rate seconds for `--duration`
  seconds, each on its own task, and every call sent is waited for (up to
  `--timeout`). Latency runs from the call's *scheduled* send time, so a
  client that falls behind shows up as latency instead of hiding it.
  Achieved RPS is the successful calls over the time from the first
  scheduled send to the last successful reply. With `--bucket S`, the
  figures are also given per S seconds of schedule (the soak's time series).

The result is one JSON object (to `--out`, else stdout): per step, overall
and per RPC, count, RPS, latency percentiles and errors by status code, plus
the CPU each `--watch`ed process tree used (bench/load.py's accounting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from nuell.auth.v1 import auth_service_pb2  # type: ignore[import-untyped]
from nuell.compute.v1 import compute_service_pb2  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2  # type: ignore[import-untyped]

from load import CHANNEL_OPTIONS, per_process, percentile, snapshot

AUTHORIZATION_VARIABLE = "NUELL_BENCH_AUTHORIZATION"
PASSWORD_VARIABLE = "NUELL_BENCH_PASSWORD"  # noqa: S105 - a variable's name

METHODS = {
    "Login": "/nuell.auth.v1.AuthService/Login",
    "ListPosts": "/nuell.posts.v1.PostService/ListPosts",
    "GetPost": "/nuell.posts.v1.PostService/GetPost",
    "CreatePost": "/nuell.posts.v1.PostService/CreatePost",
    "Analyze": "/nuell.compute.v1.ComputeService/Analyze",
}
DEFAULT_WEIGHTS = "Login=5,ListPosts=60,GetPost=20,CreatePost=10,Analyze=5"
LIST_PAGE_SIZE = 20
ANALYZE_CHARS = 500

# Words for generated posts and texts: enough of them that two random
# 24-word posts share no 3-word shingle, so the near-duplicate rule never
# refuses one.
_WORDS = (
    "river morning coffee station window garden letter winter market bridge "
    "quiet yellow number paper travel island signal pocket orange circle "
    "doctor engine forest holiday kitchen ladder mountain needle ocean pencil "
    "rabbit silver ticket umbrella valley wagon yogurt zebra anchor basket "
    "candle dragon feather guitar harbor jacket kettle lemon mirror napkin "
    "orchid parrot quilt rocket saddle tunnel velvet walnut blanket cactus "
    "dolphin elbow fabric glacier hammer igloo jungle koala lantern magnet "
    "nectar olive pepper quartz radar sponge thunder unicorn violin whistle "
    "bakery canyon desert empire falcon goblet hollow insect jigsaw kayak "
    "lobster meadow nickel oyster puzzle raisin sketch timber vessel wizard "
    "acorn beacon cobalt dinner ember fossil gravel hazel ivory juniper "
    "kernel lilac marble nutmeg onion pebble radish saffron tulip urchin "
    "vanilla willow almond barley cedar daisy fennel ginger hemlock iris"
)
WORDS = tuple(_WORDS.split())


@dataclass(frozen=True)
class Call:
    """One call: which RPC, when it was due and when it was sent and answered
    (perf_counter seconds), and its status code name if it failed."""

    rpc: str
    due: float
    sent: float
    done: float
    code: str | None


class Requests:
    """Serialized requests, chosen and varied by one seeded RNG."""

    def __init__(
        self, weights: dict[str, int], seed: int, email: str, password: str, post_ids: list[str]
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a repeatable mix, not a secret
        self.names = list(weights)
        self.cumulative: list[int] = []
        total = 0
        for name in self.names:
            total += weights[name]
            self.cumulative.append(total)
        self.login = auth_service_pb2.LoginRequest(email=email, password=password)
        self.login_bytes: bytes = self.login.SerializeToString()
        self.list_bytes: bytes = post_service_pb2.ListPostsRequest(
            page_size=LIST_PAGE_SIZE
        ).SerializeToString()
        self.get_bytes: list[bytes] = [
            post_service_pb2.GetPostRequest(id=post_id).SerializeToString() for post_id in post_ids
        ]
        self.analyze_bytes: list[bytes] = [
            compute_service_pb2.AnalyzeRequest(text=self.text(ANALYZE_CHARS)).SerializeToString()
            for _ in range(32)
        ]
        # Unique across runs too: the posts stay in the database for the run.
        self.nonce = f"{seed}-{os.getpid()}-{time.time_ns()}"
        self.created = 0

    def text(self, chars: int) -> str:
        words: list[str] = []
        length = 0
        while length < chars:
            word = self.rng.choice(WORDS)
            words.append(word)
            length += len(word) + 1
        sentences = [
            " ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)
        ]
        return " ".join(sentences)[:chars]

    def pick(self) -> str:
        roll = self.rng.randrange(self.cumulative[-1])
        for name, bound in zip(self.names, self.cumulative, strict=True):
            if roll < bound:
                return name
        raise AssertionError(roll)

    def request(self, rpc: str) -> bytes:
        if rpc == "Login":
            return self.login_bytes
        if rpc == "ListPosts":
            return self.list_bytes
        if rpc == "GetPost":
            return self.rng.choice(self.get_bytes)
        if rpc == "Analyze":
            return self.rng.choice(self.analyze_bytes)
        if rpc == "CreatePost":
            self.created += 1
            body = " ".join(self.rng.choice(WORDS) for _ in range(24))
            content = f"Mix post {self.created} ({self.nonce}): {body}."
            result: bytes = post_service_pb2.CreatePostRequest(content=content).SerializeToString()
            return result
        raise AssertionError(rpc)


@dataclass
class Client:
    """The channels and one callable per RPC on each."""

    channels: list[Any] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    next: int = 0

    def call(self, rpc: str) -> Any:
        self.next = (self.next + 1) % len(self.calls)
        return self.calls[self.next][rpc]


async def one_call(
    client: Client,
    requests: Requests,
    rpc: str,
    auth: tuple[tuple[str, str], ...],
    deadline_s: float,
    due: float,
) -> Call:
    request = requests.request(rpc)
    metadata = () if rpc == "Login" else auth
    sent = time.perf_counter()
    code = None
    try:
        await client.call(rpc)(request, metadata=metadata, timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return Call(rpc, due, sent, time.perf_counter(), code)


def summarize(calls: Sequence[Call], seconds: float, *, from_due: bool) -> dict[str, Any]:
    """Count, RPS, percentiles (ms) and errors by code, for `calls`."""
    ok = sorted(1000 * (c.done - (c.due if from_due else c.sent)) for c in calls if c.code is None)
    errors = Counter(c.code for c in calls if c.code is not None)
    return {
        "calls": len(calls),
        "ok": len(ok),
        "rps": len(ok) / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(ok, 50),
        "p90_ms": percentile(ok, 90),
        "p99_ms": percentile(ok, 99),
        "max_ms": ok[-1] if ok else math.nan,
        "errors": sum(errors.values()),
        "error_codes": dict(errors),
    }


def by_rpc(
    calls: Sequence[Call], names: Iterable[str], seconds: float, *, from_due: bool
) -> dict[str, dict[str, Any]]:
    return {
        name: summarize([c for c in calls if c.rpc == name], seconds, from_due=from_due)
        for name in names
    }


async def closed(
    client: Client, requests: Requests, auth: tuple[tuple[str, str], ...], args: argparse.Namespace
) -> list[dict[str, Any]]:
    watch = watched(args)
    begin = time.perf_counter()
    start, end = begin + args.warmup, begin + args.warmup + args.duration
    calls: list[Call] = []

    async def caller() -> None:
        while (now := time.perf_counter()) < end:
            call = await one_call(client, requests, requests.pick(), auth, args.timeout, now)
            if start <= call.done < end:
                calls.append(call)

    async def cpu() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        before = snapshot(watch, connections=False)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        return cpu_percent(before, snapshot(watch, connections=False), args.duration)

    used, *_ = await asyncio.gather(cpu(), *(caller() for _ in range(args.concurrency)))
    step = {"mode": "closed", "concurrency": args.concurrency, "duration_s": args.duration}
    return [
        step
        | summarize(calls, args.duration, from_due=False)
        | {"rpcs": by_rpc(calls, requests.names, args.duration, from_due=False), "cpu": used}
    ]


async def open_step(
    client: Client,
    requests: Requests,
    auth: tuple[tuple[str, str], ...],
    rate: float,
    duration: float,
    args: argparse.Namespace,
    *,
    record: bool = True,
) -> dict[str, Any]:
    """Calls at `rate` per second for `duration` seconds; every one waited for."""
    watch = watched(args)
    total = max(1, round(rate * duration))
    pending: set[asyncio.Task[Call]] = set()
    calls: list[Call] = []
    refused = 0  # not sent: --max-in-flight calls were already waiting

    def finished_call(task: asyncio.Task[Call]) -> None:
        pending.discard(task)
        calls.append(task.result())

    before = snapshot(watch, connections=False)
    start = time.perf_counter() + 0.01
    sent = 0
    while sent < total:
        due = start + sent / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        now = time.perf_counter()
        while sent < total and (due := start + sent / rate) <= now:
            sent += 1
            if len(pending) >= args.max_in_flight:
                refused += 1
                continue
            task = asyncio.create_task(
                one_call(client, requests, requests.pick(), auth, args.timeout, due)
            )
            pending.add(task)
            task.add_done_callback(finished_call)
    sending_ended = time.perf_counter()
    while pending:
        await asyncio.wait(set(pending))
    after = snapshot(watch, connections=False)
    finished = time.perf_counter()
    if not record:
        return {}
    ok_done = [c.done for c in calls if c.code is None]
    span = (max(ok_done) if ok_done else finished) - start
    step = {
        "mode": "open",
        "offered_rps": rate,
        "duration_s": duration,
        "sent": sent - refused,
        "refused_in_client": refused,
        # How late the client sent its calls: near zero unless it ran out of CPU.
        "send_lag_p99_ms": percentile(sorted(1000 * (c.sent - c.due) for c in calls), 99),
        "sending_took_s": sending_ended - start,
    }
    summary = summarize(calls, span, from_due=True)
    step |= summary | {"achieved_rps": summary["rps"]}
    step["rpcs"] = by_rpc(calls, requests.names, span, from_due=True)
    step["cpu"] = cpu_percent(before, after, finished - start)
    if args.bucket:
        step["buckets"] = buckets(calls, start, duration, args.bucket)
    return step


def buckets(calls: Sequence[Call], start: float, duration: float, size: float) -> list[Any]:
    """The calls due in each `size` seconds of the schedule, summarized."""
    count = max(1, math.ceil(duration / size - 1e-9))
    slots: list[list[Call]] = [[] for _ in range(count)]
    for c in calls:
        slots[min(count - 1, int((c.due - start) / size))].append(c)
    out = []
    for n, slot in enumerate(slots):
        width = min(size, duration - n * size)
        summary = summarize(slot, width, from_due=True)
        out.append({"t_s": n * size, "seconds": width} | summary)
    return out


def watched(args: argparse.Namespace) -> dict[str, int]:
    return {name: int(pid) for name, _, pid in (item.partition("=") for item in args.watch)}


def cpu_percent(before: Any, after: Any, seconds: float) -> dict[str, float]:
    processes = per_process(before, after, seconds)
    return {name: sum(row["cpu_percent"] for row in rows) for name, rows in processes.items()}


async def connect(target: str, count: int) -> Client:
    client = Client()
    for _ in range(count):
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        client.channels.append(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        client.calls.append({name: channel.unary_unary(method) for name, method in METHODS.items()})
    return client


async def run(args: argparse.Namespace) -> dict[str, Any]:
    authorization = os.environ.get(AUTHORIZATION_VARIABLE)
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if not authorization:
        raise SystemExit(f"mix: {AUTHORIZATION_VARIABLE} is not set")
    auth = (("authorization", authorization),)
    post_ids = args.post_ids.read_text(encoding="utf-8").split()
    requests = Requests(args.weights, args.seed, args.login_email, password, post_ids)
    client = await connect(args.target, args.channels)
    try:
        if args.mode == "closed":
            steps = await closed(client, requests, auth, args)
        else:
            if args.warmup > 0:
                await open_step(
                    client, requests, auth, args.rates[0], args.warmup, args, record=False
                )
            steps = []
            for rate in args.rates:
                steps.append(await open_step(client, requests, auth, rate, args.duration, args))
                if args.pause > 0 and rate != args.rates[-1]:
                    await asyncio.sleep(args.pause)
    finally:
        for channel in client.channels:
            await channel.close()
    return {
        "target": args.target,
        "mode": args.mode,
        "weights": args.weights,
        "seed": args.seed,
        "channels": args.channels,
        "warmup_s": args.warmup,
        "timeout_s": args.timeout,
        "list_page_size": LIST_PAGE_SIZE,
        "analyze_chars": ANALYZE_CHARS,
        "steps": steps,
    }


def weights_of(text: str) -> dict[str, int]:
    weights = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in METHODS:
            raise argparse.ArgumentTypeError(f"{name!r}: not one of {', '.join(METHODS)}")
        weights[name.strip()] = int(value)
    if any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise argparse.ArgumentTypeError("weights are whole numbers >= 0, not all 0")
    return {name: w for name, w in weights.items() if w}


def rates_of(text: str) -> list[float]:
    rates = [float(item) for item in text.split(",")]
    if any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError("rates are calls per second, > 0")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add: Callable[..., Any] = parser.add_argument
    add("--target", required=True, help="host:port (plaintext h2c)")
    add("--post-ids", type=Path, required=True, help="file of post ids GetPost picks from")
    add("--login-email", required=True, help="Login's account (password: $NUELL_BENCH_PASSWORD)")
    add("--weights", type=weights_of, default=weights_of(DEFAULT_WEIGHTS), help=DEFAULT_WEIGHTS)
    add("--seed", type=int, default=1, help="the RNG's seed (1)")
    add("--mode", choices=("closed", "open"), default="closed")
    add("--concurrency", type=int, default=32, help="closed: calls in flight (32)")
    add("--rates", type=rates_of, default=[100.0], help="open: calls/s, comma-separated")
    add("--duration", type=float, default=5.0, help="measured seconds (per rate) (5)")
    add("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    add("--pause", type=float, default=1.0, help="open: idle seconds between rates (1)")
    add("--bucket", type=float, default=0.0, help="open: also summarize every S seconds")
    add("--max-in-flight", type=int, default=4096, help="open: calls waiting at most (4096)")
    add("--channels", type=int, default=8, help="connections (8)")
    add("--timeout", type=float, default=5.0, help="deadline per call, seconds (5)")
    add("--watch", action="append", default=[], metavar="NAME=PID", help="report its CPU too")
    add("--out", type=Path, help="write the JSON result here (default stdout)")
    args = parser.parse_args(argv)
    if min(args.concurrency, args.channels, args.max_in_flight) < 1 or args.duration <= 0:
        parser.error("concurrency, channels, max-in-flight >= 1 and duration > 0")
    return args


def main() -> int:
    args = parse_args()
    text = json.dumps(asyncio.run(run(args)), indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
