"""watch: WatchPosts under load (bench/README.md). Watchers in a process of their own
(gRPC direct, or gRPC-Web through Envoy over HTTP/1.1), CreatePost paced from this one:
delivery latency from the writer's OK to each watcher's receipt, events lost and
repeated, the gateway's CPU per delivered event and memory per open stream."""

import asyncio
import multiprocessing
import random
import re
import struct
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2 as pb  # type: ignore[import-untyped]

from bench.driver import CHANNEL_OPTIONS, memory, percentile, snapshot
from bench.report import codes, ms, say
from bench.scenarios import _words
from bench.stack import Stack, sign_up

AUTHORS, SECONDS, SERVICE, CHANNELS = 50, 10.0, "/nuell.posts.v1.PostService/", 8
_channels: list[Any] = []  # the watchers' process's connections
# (label, target, watchers, each follows one author or everyone, CreatePost/s)
LEGS = (
    ("direct, 1,000 watchers of one author each", "gateway", 1000, True, 200),
    ("direct, 100 watchers of everyone", "gateway", 100, False, 200),
    ("via Envoy (gRPC-Web), 100 watchers of everyone", "edge", 100, False, 200),
)


@dataclass(frozen=True)
class Watchers:
    target: str
    grpc_web: bool
    tokens: list[str]  # one bearer token per watcher
    authors: list[str]  # the author each follows, "" for everyone
    stop: Any  # a Manager Event, set once the writes are done and their events due


async def _grpc(plan: Watchers, n: int, seen: dict[str, float], ready: Any) -> str:
    """One gRPC stream, on one of CHANNELS connections (each may reach another gateway
    process: SO_REUSEPORT places connections, not streams); how it ended."""
    if n < CHANNELS:
        _channels.append(grpc.aio.insecure_channel(plan.target, options=CHANNEL_OPTIONS))
    await asyncio.sleep(0)  # every watcher's turn after the first CHANNELS made theirs
    call = _channels[n % CHANNELS].unary_stream(
        SERVICE + "WatchPosts", pb.WatchPostsRequest.SerializeToString, pb.PostEvent.FromString
    )(
        pb.WatchPostsRequest(author_id=plan.authors[n]),
        metadata=(("authorization", f"Bearer {plan.tokens[n]}"),),
    )
    await call.initial_metadata()
    ready()
    try:
        async for event in call:
            _seen(seen, event)
    except grpc.aio.AioRpcError as exc:
        return str(exc.details() or exc.code().name)
    return "OK"


async def _grpc_web(plan: Watchers, n: int, seen: dict[str, float], ready: Any) -> str:
    """One gRPC-Web stream over HTTP/1.1: the request whole, the reply chunked; how it ended."""
    host, _, port = plan.target.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = pb.WatchPostsRequest(author_id=plan.authors[n]).SerializeToString()
    frame = struct.pack(">BI", 0, len(body)) + body
    writer.write(
        (
            f"POST {SERVICE}WatchPosts HTTP/1.1\r\nhost: {plan.target}\r\n"
            "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n"
            f"authorization: Bearer {plan.tokens[n]}\r\ncontent-length: {len(frame)}\r\n\r\n"
        ).encode()
        + frame
    )
    await reader.readuntil(b"\r\n\r\n")  # headers: the stream is open
    ready()
    buffer, ended = b"", "closed without trailers"
    while size := int((await reader.readline()).strip() or b"0", 16):  # chunked encoding
        buffer += (await reader.readexactly(size + 2))[:-2]
        while len(buffer) >= 5 and len(buffer) >= 5 + (
            length := struct.unpack(">I", buffer[1:5])[0]
        ):
            if buffer[0] & 0x80:  # the trailers: grpc-message, else grpc-status
                text = buffer[5 : 5 + length].decode()
                trailers = dict(re.findall(r"(grpc-\w+):\s*(.*?)\r\n", text))
                ended = unquote(trailers.get("grpc-message", "")) or trailers["grpc-status"]
            else:
                _seen(seen, pb.PostEvent.FromString(buffer[5 : 5 + length]))
            buffer = buffer[5 + length :]
    writer.close()
    return ended


def _seen(seen: dict[str, float], event: Any) -> None:
    if event.type == pb.POST_EVENT_TYPE_CREATED:
        seen["dup"] += event.post_id in seen
        seen[event.post_id] = time.time()


def watch(plan: Watchers, opened: Any) -> tuple[list[dict[str, float]], Counter[str]]:
    """In the watchers' process: what each saw, and how the streams that ended early ended."""

    async def run() -> tuple[list[dict[str, float]], Counter[str]]:
        seen: list[dict[str, float]] = [{"dup": 0} for _ in plan.tokens]
        count = [0]

        def ready() -> None:
            count[0] += 1
            if count[0] == len(plan.tokens):
                opened.set()

        one = _grpc_web if plan.grpc_web else _grpc
        tasks = [asyncio.ensure_future(one(plan, n, seen[n], ready)) for n in range(len(seen))]
        await asyncio.to_thread(plan.stop.wait)
        for task in tasks:
            task.cancel()
        ends = await asyncio.gather(*tasks, return_exceptions=True)
        return seen, Counter(
            str(end) for end in ends if not isinstance(end, asyncio.CancelledError)
        )

    return asyncio.run(run())


async def write(gateway: str, authors: list[tuple[str, str]], rate: float) -> dict[str, Any]:
    """CreatePost at `rate` for SECONDS, round robin over the authors: post id -> (author,
    OK time), and under "errors" the codes of the calls that failed."""
    done: dict[str, Any] = {"errors": Counter()}
    nonce = time.time_ns()  # new words every run: the near-duplicate rule would refuse repeats
    async with grpc.aio.insecure_channel(gateway) as channel:
        create = channel.unary_unary(SERVICE + "CreatePost", pb.CreatePostRequest.SerializeToString,
                                     pb.CreatePostResponse.FromString)  # fmt: skip

        async def one(n: int) -> None:
            author, token = authors[n % len(authors)]
            words = _words(random.Random(f"{nonce}-{n}"), 20)  # noqa: S311 - words, not secrets
            bearer = (("authorization", f"Bearer {token}"),)
            try:
                reply = await create(pb.CreatePostRequest(content=f"{n} {words}"), metadata=bearer)
                done[reply.post.id] = (author, time.time())
            except grpc.aio.AioRpcError as exc:
                done["errors"][exc.code().name] += 1

        start, tasks = time.monotonic(), []
        for n in range(int(rate * SECONDS)):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.gather(*tasks)
    return done


def cpu_seconds(pid: int) -> float:
    return sum(used for used, _, _ in snapshot({"gateway": pid})["gateway"].values())


def run(stack: Stack) -> dict[str, Any]:
    gateway, pid, figures = stack.addresses["gateway"], stack.pids["gateway"], {}
    signed = (sign_up(gateway, stack.database_url) for _ in range(AUTHORS))
    authors = [(user, token) for user, _, token in signed]
    say(f"\nwatch: CreatePost paced for {SECONDS:g} s over {AUTHORS} authors; latency from the "
        "writer's OK to each receipt; the gateway's CPU beyond the writes' own\n"
        f"{'':<48} {'events':>7} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} {'dup':>4} "
        f"{'CPU ms/event':>12} {'KB/stream':>9}  write errors")  # fmt: skip
    spawn = multiprocessing.get_context("spawn")
    for label, target, count, one_author, rate in LEGS:
        with (
            stack.serving((target,)),
            ProcessPoolExecutor(1, mp_context=spawn) as pool,
            spawn.Manager() as manager,
        ):
            used = cpu_seconds(pid)
            alone = len(asyncio.run(write(gateway, authors, rate))) - 1
            per_write, rss = (cpu_seconds(pid) - used) / alone, memory({"g": pid})["rss_mb"]["g"]
            followed = [authors[n % AUTHORS][0] if one_author else "" for n in range(count)]
            tokens = [authors[n % AUTHORS][1] for n in range(count)]
            opened, stop = manager.Event(), manager.Event()
            future = pool.submit(watch, Watchers(stack.addresses[target], target != "gateway",
                                                 tokens, followed, stop), opened)  # fmt: skip
            if not opened.wait(60):
                raise RuntimeError(f"{label}: the streams did not all open")
            per_stream_kb = 1024 * (memory({"g": pid})["rss_mb"]["g"] - rss) / count
            used = cpu_seconds(pid)
            began = time.monotonic()
            written = asyncio.run(write(gateway, authors, rate))
            took = time.monotonic() - began
            time.sleep(2)  # the last events arrive
            stop.set()
            errors, used = written.pop("errors"), cpu_seconds(pid) - used - per_write * len(written)
            (seen, ended), delays, lost, dup = future.result(), [], 0, 0
        for follows, got in zip(followed, seen, strict=True):
            dup += int(got.pop("dup"))
            for post, (author, ok) in written.items():
                if not follows or follows == author:
                    lost += post not in got
                    delays += [1000 * max(0.0, got[post] - ok)] if post in got else []
        p50, p99 = (percentile(sorted(delays), p) for p in (50, 99))
        cost = 1000 * used / max(1, len(delays))
        figures[label] = {"events": len(delays), "p50_ms": p50, "p99_ms": p99, "lost": lost,
                          "duplicates": dup, "gateway_cpu_ms_per_event": cost,
                          "kb_per_stream": per_stream_kb, "write_errors": dict(errors),
                          "write_seconds": took,
                          "streams_ended_early": dict(ended)}  # fmt: skip
        say(f"{label:<48} {len(delays):>7} {ms(p50, 1):>7} {ms(p99, 1):>7} {lost:>5} {dup:>4} "
            f"{cost:>12.3f} {per_stream_kb:>9.1f}  {codes(errors) or '-'}")  # fmt: skip
        if ended:  # before the writes were done: `lost` counts what came after
            say(f"    streams that ended early: {codes(ended)}")
        if took > 1.5 * SECONDS:  # the calls queued in the gateway: it was saturated
            say(f"    the {SECONDS:g} s of writes took {took:.0f} s to answer")
    return figures
