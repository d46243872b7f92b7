"""A bare grpc.aio server that echoes bytes: the ceiling for Python gRPC here.

py_gateway's process model (`run_workers`: N processes sharing the port) with
nothing between the wire and the handler: no interceptor, no protobuf, no
database. What a gateway call costs beyond an echo call is the gateway's own.
"""

import asyncio
import multiprocessing
import signal
import sys
from typing import Any

import grpc  # type: ignore[import-untyped]
from nuell_gateway.workers import READY, run_workers


async def echo(request: bytes, context: object) -> bytes:
    return request


async def serve(addr: str, ready: "multiprocessing.Queue[Any]") -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    echoes = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    handler = grpc.method_handlers_generic_handler("nuell.bench.v1.EchoService", echoes)
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(addr)
    await server.start()
    ready.put(READY)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def worker(addr: str, ready: "multiprocessing.Queue[Any]") -> None:
    asyncio.run(serve(addr, ready))


def ready(port: int) -> None:
    print(f"echo_server listening on port {port}", flush=True)


if __name__ == "__main__":  # python -m bench.echo_server HOST:PORT WORKERS
    run_workers(sys.argv[1], int(sys.argv[2]), worker, grace_seconds=1.0, on_ready=ready)
