"""Assembly and lifecycle of the gRPC server.

Start: check the database schema, mount every service behind the call
boundary, serve health and reflection, bind. Stop (SIGTERM/SIGINT): health
turns NOT_SERVING first so load balancers stop sending, then the server
stops accepting calls and lets in-flight ones finish within the grace
period, then the connection pool closes and queued spans are flushed
(`tracing`, when an OTLP endpoint is configured; set up per process here,
so each worker has its own exporter).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from sqlalchemy.exc import DBAPIError

from nuell_gateway import audit, tracing
from nuell_gateway.bootstrap import bootstrap_admin_from_settings
from nuell_gateway.cancellation import cancel_and_wait
from nuell_gateway.config import Settings
from nuell_gateway.db.engine import create_engine, unreachable_message
from nuell_gateway.db.schema import ensure_schema_current
from nuell_gateway.metrics import report_pool_use, serve_metrics
from nuell_gateway.post_analysis import run_backfill
from nuell_gateway.reflection import enable_reflection
from nuell_gateway.resources import Resources
from nuell_gateway.services import mount_services

logger = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class StartupError(RuntimeError):
    """The gateway cannot start; the message says what to do."""


def check_bindable(address: str) -> int:
    """The port `address` would bind (resolving port 0), or `StartupError`.

    grpc reports a failed bind on stderr in its own format before raising;
    trying first keeps the refusal to our one clear line.
    """
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_server((host.strip("[]"), int(port))) as probe:
            bound: int = probe.getsockname()[1]
            return bound
    except OSError:
        raise StartupError(
            f"cannot listen on {address}: the port is in use or the address "
            "is not local; stop the other process or set NUELL_GATEWAY_ADDR"
        ) from None


@dataclass(slots=True)
class Gateway:
    """A running gateway: its server, health, resources and bound port."""

    server: grpc.aio.Server
    health: HealthServicer
    resources: Resources
    port: int
    # The analysis backfill (posts written while rust_compute was down), the
    # pool-use reporter, the mail sender and the audit trail's retention.
    background: tuple[asyncio.Task[None], ...]

    @classmethod
    async def start(cls, settings: Settings, *, worker_of: str | None = None) -> Gateway:
        """Check the database, build everything and start serving.

        `worker_of` is the address a supervisor already checked and shares
        among its worker processes (SO_REUSEPORT); the supervisor also did
        the once-per-start work (`prepare`).
        """
        resources = await _open_resources(settings)
        try:
            if worker_of is None:
                await bootstrap_admin_from_settings(resources)
                check_bindable(settings.gateway_addr)
                warn_if_mail_is_held(settings)
            server = grpc.aio.server(
                # grpc shares ports (SO_REUSEPORT) by default on Linux; only
                # workers should, so a busy port otherwise fails loudly.
                options=[("grpc.so_reuseport", int(worker_of is not None))],
            )
            health = HealthServicer()
            service_names = mount_services(server, resources, health)
            enable_reflection(server, [*service_names, HEALTH_SERVICE])
            port = server.add_insecure_port(worker_of or settings.gateway_addr)
        except BaseException:
            await resources.close()
            raise
        tracing.start()
        await server.start()
        for name in ["", *service_names]:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        background = (
            asyncio.create_task(run_backfill(resources), name="analysis-backfill"),
            asyncio.create_task(
                report_pool_use(resources.engine, resources.hot_reads), name="pool-use"
            ),
            asyncio.create_task(resources.mailer.run(), name="mail-sender"),
            asyncio.create_task(audit.prune_forever(resources), name="audit-retention"),
        )
        return cls(
            server=server, health=health, resources=resources, port=port, background=background
        )

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting, drain in-flight calls, close the pool, flush spans."""
        await self.health.enter_graceful_shutdown()
        self.resources.post_events.shut_down()  # streams end now, each with its resume token
        for task in self.background:
            task.cancel()
        await self.server.stop(self.resources.settings.shutdown_grace_seconds)
        await cancel_and_wait(self.background)
        await self.resources.close()
        await tracing.stop()


async def _open_resources(settings: Settings) -> Resources:
    """Connect, insist on the current schema, and build the shared resources."""
    engine = create_engine(settings)
    try:
        await ensure_schema_current(engine)
    except DBAPIError as exc:
        await engine.dispose()
        raise StartupError(unreachable_message(settings.sqlalchemy_url, exc)) from None
    except BaseException:
        await engine.dispose()
        raise
    resources = Resources.build(settings, engine)
    await resources.open()
    return resources


async def prepare(settings: Settings) -> None:
    """What must happen once per start, not once per worker process."""
    check_bindable(settings.gateway_addr)
    resources = await _open_resources(settings)
    try:
        await bootstrap_admin_from_settings(resources)
    finally:
        await resources.close()
    warn_if_mail_is_held(settings)


def warn_if_mail_is_held(settings: Settings) -> None:
    """Once per start: without an SMTP server, mails wait in the outbox."""
    if settings.smtp_server is None:
        logger.warning(
            "NUELL_SMTP_URL is not set: mails (verification, reset, email change) wait in "
            "the mail_outbox table and none is sent until a gateway with it set starts"
        )


async def run_until_signalled(gateway: Gateway, on_ready: Callable[[int], None]) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    on_ready(gateway.port)
    await stop_requested.wait()
    grace = gateway.resources.settings.shutdown_grace_seconds
    logger.info("shutting down", extra={"grace_seconds": grace})
    await gateway.stop()
    logger.info("stopped")


def announce(settings: Settings, port: int) -> None:
    """The one stdout line a runner or test reads to learn the real address."""
    host = settings.gateway_addr.rsplit(":", 1)[0]
    logger.info("serving", extra={"addr": f"{host}:{port}", "workers": settings.workers})
    print(f"nuell_gateway listening on {host}:{port}", flush=True)


async def serve_in_this_process(settings: Settings) -> None:
    gateway = await Gateway.start(settings)
    stop_metrics = serve_metrics_or_explain(settings)
    try:
        await run_until_signalled(gateway, lambda port: announce(settings, port))
    finally:
        stop_metrics()


def serve_metrics_or_explain(settings: Settings) -> Callable[[], None]:
    """Serve /metrics, or StartupError with one clear line."""
    try:
        return serve_metrics(settings.metrics_addr)
    except OSError:
        raise StartupError(
            f"cannot serve metrics on {settings.metrics_addr}: the port is in use; "
            "stop the other process or set NUELL_METRICS_ADDR"
        ) from None
