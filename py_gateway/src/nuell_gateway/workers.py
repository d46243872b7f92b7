"""Several gateway processes sharing one port, so Python uses every core.

One grpc.aio process is bound to one core by the GIL. The supervisor does
the once-per-start work (bind check, schema check, bootstrap admin), then
starts `NUELL_WORKERS` processes that each bind the same address with
SO_REUSEPORT, so the kernel spreads connections across them. Each worker
has its own event loop, connection pool and health service. SIGTERM or
SIGINT is passed on, and each worker drains its own calls; a worker that
dies on its own takes the others down, and the exit status says so, so
whatever supervises the gateway (the runner, Kubernetes) restarts it whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from nuell_gateway.config import Settings
from nuell_gateway.log import configure_logging
from nuell_gateway.server import (
    Gateway,
    StartupError,
    announce,
    check_bindable,
    prepare,
    run_until_signalled,
    serve_in_this_process,
)

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60


class WorkerDiedError(RuntimeError):
    """A worker process exited on its own while serving."""


def serve(settings: Settings) -> None:
    """Serve with `settings.workers` processes (in this one when it is 1)."""
    if settings.workers == 1:
        asyncio.run(serve_in_this_process(settings))
        return
    host = settings.gateway_addr.rsplit(":", 1)[0]
    address = f"{host}:{check_bindable(settings.gateway_addr)}"
    asyncio.run(prepare(settings.model_copy(update={"gateway_addr": address})))

    # spawn, not fork: grpc's core must not be copied into a child.
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[Any] = context.Queue()
    workers = [
        context.Process(target=_worker_main, args=(settings, address, ready), name=f"worker-{n}")
        for n in range(settings.workers)
    ]
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    for worker in workers:
        worker.start()
    try:
        _await_ready(workers, ready)
    except StartupError:
        stop(signal.SIGTERM, None)
        _join(workers, settings)
        raise
    announce(settings, int(address.rsplit(":", 1)[1]))

    while not stopping:
        for worker in workers:
            worker.join(timeout=0.2)
            if not worker.is_alive() and not stopping:
                logger.error(
                    "worker died", extra={"worker": worker.name, "exitcode": worker.exitcode}
                )
                stop(signal.SIGTERM, None)
                _join(workers, settings)
                raise WorkerDiedError(
                    f"{worker.name} exited with status {worker.exitcode}; stopped the others"
                )
    _join(workers, settings)


def _await_ready(workers: Sequence[BaseProcess], ready: multiprocessing.Queue[Any]) -> None:
    pending = len(workers)
    while pending:
        try:
            message = ready.get(timeout=READY_TIMEOUT_SECONDS)
        except queue.Empty:
            raise StartupError("the gateway workers did not start in time") from None
        if message != "ready":
            raise StartupError(str(message))
        pending -= 1


def _join(workers: Sequence[BaseProcess], settings: Settings) -> None:
    for worker in workers:
        worker.join(timeout=settings.shutdown_grace_seconds + 5)
        if worker.is_alive():
            worker.kill()


def _worker_main(settings: Settings, address: str, ready: multiprocessing.Queue[Any]) -> None:
    configure_logging(settings.log_level)

    async def work() -> None:
        try:
            gateway = await Gateway.start(settings, worker_of=address)
        except StartupError as exc:
            ready.put(str(exc))
            return
        await run_until_signalled(gateway, lambda _port: ready.put("ready"))

    asyncio.run(work())
    sys.exit(0)
