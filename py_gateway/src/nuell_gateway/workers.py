"""Several server processes sharing one port, so Python uses every core.

One grpc.aio process is bound to one core by the GIL. `run_workers` starts
N processes that each bind the same address with SO_REUSEPORT, so the
kernel spreads connections across them; it holds the port (bound, never
listening) until they have it, passes SIGTERM/SIGINT on, and if a worker
dies on its own stops the others and says so, so whatever supervises the
whole (the runner, Kubernetes) restarts it rather than leaving it half
alive. The gateway uses it with NUELL_WORKERS; bench/echo_server.py uses it
too, so the echo ceiling has the same process model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from nuell_gateway.config import Settings
from nuell_gateway.log import configure_logging
from nuell_gateway.metrics import multiprocess_recording
from nuell_gateway.server import (
    Gateway,
    StartupError,
    announce,
    check_bindable,
    prepare,
    run_until_signalled,
    serve_in_this_process,
    serve_metrics_or_explain,
)

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60
READY = "ready"

# A worker is a top-level function (spawned processes import it by name)
# called with the shared address and a queue on which it puts READY once it
# serves, or a one-line reason it cannot.
Worker = Callable[..., None]


class WorkerDiedError(RuntimeError):
    """A worker process exited on its own while serving."""


def run_workers(
    address: str,
    count: int,
    worker: Worker,
    *worker_args: Any,
    grace_seconds: float,
    on_ready: Callable[[int], None],
) -> None:
    """Serve `address` with `count` processes until SIGTERM/SIGINT.

    Raises StartupError if a worker cannot start, WorkerDiedError if one
    dies while serving.
    """
    host, _, port_text = address.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reservation = socket.socket(family, socket.SOCK_STREAM)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((host.strip("[]"), int(port_text)))
    port: int = reservation.getsockname()[1]
    shared = f"{host}:{port}"

    # spawn, not fork: grpc's core must not be copied into a child.
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[Any] = context.Queue()
    processes = [
        context.Process(target=worker, args=(shared, ready, *worker_args), name=f"worker-{n}")
        for n in range(count)
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
        _await_ready(processes, ready)
    except StartupError:
        stop(signal.SIGTERM, None)
        _join(processes, grace_seconds)
        raise
    finally:
        reservation.close()
    on_ready(port)

    while not stopping:
        for process in processes:
            process.join(timeout=0.2)
            if not process.is_alive() and not stopping:
                logger.error(
                    "worker died", extra={"worker": process.name, "exitcode": process.exitcode}
                )
                stop(signal.SIGTERM, None)
                _join(processes, grace_seconds)
                raise WorkerDiedError(
                    f"{process.name} exited with status {process.exitcode}; stopped the others"
                )
    _join(processes, grace_seconds)


def _await_ready(processes: Sequence[BaseProcess], ready: multiprocessing.Queue[Any]) -> None:
    for _ in processes:
        try:
            message = ready.get(timeout=READY_TIMEOUT_SECONDS)
        except queue.Empty:
            raise StartupError("the worker processes did not start in time") from None
        if message != READY:
            raise StartupError(str(message))


def _join(processes: Sequence[BaseProcess], grace_seconds: float) -> None:
    for process in processes:
        process.join(timeout=grace_seconds + 5)
        if process.is_alive():
            process.kill()
            # Gone, not just signalled, before this process exits: until
            # then the worker still holds the port.
            process.join()


# --- the gateway --------------------------------------------------------------


def serve(settings: Settings) -> None:
    """Serve with `settings.workers` processes (in this one when it is 1)."""
    if settings.workers == 1:
        asyncio.run(serve_in_this_process(settings))
        return
    host = settings.gateway_addr.rsplit(":", 1)[0]
    address = f"{host}:{check_bindable(settings.gateway_addr)}"
    asyncio.run(prepare(settings.model_copy(update={"gateway_addr": address})))
    # Workers record into files; this process serves their sum.
    with multiprocess_recording():
        stop_metrics = serve_metrics_or_explain(settings)
        try:
            run_workers(
                address,
                settings.workers,
                _gateway_worker,
                settings,
                grace_seconds=settings.shutdown_grace_seconds,
                on_ready=lambda port: announce(settings, port),
            )
        finally:
            stop_metrics()


def _gateway_worker(address: str, ready: multiprocessing.Queue[Any], settings: Settings) -> None:
    configure_logging(settings.log_level)

    async def work() -> None:
        try:
            gateway = await Gateway.start(settings, worker_of=address)
        except StartupError as exc:
            ready.put(str(exc))
            return
        await run_until_signalled(gateway, lambda _port: ready.put(READY))

    asyncio.run(work())
    sys.exit(0)
