"""A bare grpc.aio server that echoes bytes: the ceiling for Python gRPC here.

    .venv/bin/python bench/echo_server.py --addr 127.0.0.1:0 --workers 2

The same process model as py_gateway: one grpc.aio process, or with
`--workers N` (N > 1) N processes sharing the port through SO_REUSEPORT
under a supervisor that waits for them and passes signals on, as py_gateway
does with NUELL_WORKERS. But nothing between the wire and the handler: no
interceptor, no protobuf parsing (a generic handler without serializers
hands the payload over as raw bytes), no database. Whatever a gateway call
costs beyond an echo call is the gateway's own work.

Prints `echo_server listening on <ip:port>` once every process serves; stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]

SERVICE = "nuell.bench.v1.EchoService"
METHOD = f"/{SERVICE}/Echo"
READY_TIMEOUT_SECONDS = 30


async def echo(request: bytes, context: object) -> bytes:
    return request


async def serve(addr: str, *, shared: bool, on_ready: Callable[[int], None]) -> None:
    """Serve until SIGTERM or SIGINT; `shared` binds with SO_REUSEPORT (workers)."""
    # As py_gateway: only workers share a port; a lone server fails on a busy one.
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(shared))])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            )
        ]
    )
    port: int = server.add_insecure_port(addr)
    await server.start()
    on_ready(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def announce(host: str, port: int) -> None:
    print(f"echo_server listening on {host}:{port}", flush=True)


def worker_main(addr: str, ready: multiprocessing.Queue[Any]) -> None:
    asyncio.run(serve(addr, shared=True, on_ready=lambda _port: ready.put("ready")))


def supervise(host: str, port: int, workers: int) -> int:
    # Holds the port (SO_REUSEPORT, never listening) until the workers have it.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host.strip("[]"), port))
    port = reservation.getsockname()[1]
    addr = f"{host}:{port}"

    # spawn, not fork: grpc's core must not be copied into a child.
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[Any] = context.Queue()
    processes = [
        context.Process(target=worker_main, args=(addr, ready), name=f"echo-{n}")
        for n in range(workers)
    ]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=READY_TIMEOUT_SECONDS)
    except queue.Empty:
        print("echo_server: the workers did not start in time", file=sys.stderr)
        stop(signal.SIGTERM, None)
        return 1
    finally:
        reservation.close()
    announce(host, port)

    status = 0
    while not stopping:
        for process in processes:
            process.join(timeout=0.2)
            if not process.is_alive() and not stopping:
                print(f"echo_server: {process.name} exited; stopping", file=sys.stderr)
                stop(signal.SIGTERM, None)
                status = 1
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:0", help="host:port to bind (0: any port)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (as NUELL_WORKERS)"
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    host, _, port_text = args.addr.rpartition(":")
    if args.workers == 1:
        asyncio.run(serve(args.addr, shared=False, on_ready=lambda port: announce(host, port)))
        return 0
    return supervise(host, int(port_text), args.workers)


if __name__ == "__main__":
    sys.exit(main())
