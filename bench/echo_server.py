"""A bare grpc.aio server that echoes bytes: the ceiling for Python gRPC here.

py_gateway's process model (`run_workers`: N processes sharing the port) with
nothing between the wire and the handler: no interceptor, no protobuf, no
database. What a gateway call costs beyond an echo call is the gateway's own.
"""

import argparse
import asyncio
import multiprocessing
import signal
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:0", help="host:port to bind (0: any port)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    args = parser.parse_args()
    host = args.addr.rpartition(":")[0]
    run_workers(
        args.addr,
        max(1, args.workers),
        worker,
        grace_seconds=1.0,
        on_ready=lambda port: print(f"echo_server listening on {host}:{port}", flush=True),
    )


if __name__ == "__main__":
    main()
