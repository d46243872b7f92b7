"""A bare grpc.aio server that echoes bytes: the ceiling for Python gRPC here.

    .venv/bin/python bench/echo_server.py --addr 127.0.0.1:0 --workers 2

The same process model as py_gateway: one grpc.aio process, or with
`--workers N` (N > 1) N processes sharing the port through SO_REUSEPORT,
run by py_gateway's own supervisor (`nuell_gateway.workers.run_workers`).
But nothing between the wire and the handler: no interceptor, no protobuf
parsing (a generic handler without serializers hands the payload over as
raw bytes), no database. Whatever a gateway call
costs beyond an echo call is the gateway's own work.

Prints `echo_server listening on <ip:port>` once every process serves; stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal
import sys
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
from nuell_gateway.server import StartupError
from nuell_gateway.workers import READY, WorkerDiedError, run_workers

SERVICE = "nuell.bench.v1.EchoService"
METHOD = f"/{SERVICE}/Echo"


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
    asyncio.run(serve(addr, shared=True, on_ready=lambda _port: ready.put(READY)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:0", help="host:port to bind (0: any port)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (as NUELL_WORKERS)"
    )
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    host = args.addr.rpartition(":")[0]
    if args.workers == 1:
        asyncio.run(serve(args.addr, shared=False, on_ready=lambda port: announce(host, port)))
        return 0
    try:
        run_workers(
            args.addr,
            args.workers,
            worker_main,
            grace_seconds=1.0,
            on_ready=lambda port: announce(host, port),
        )
    except (StartupError, WorkerDiedError) as exc:
        print(f"echo_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
