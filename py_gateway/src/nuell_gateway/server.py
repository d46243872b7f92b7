"""Assembly and lifecycle of the gRPC server.

Start: check the database schema, mount every service behind the call
boundary, serve health and reflection, bind. Stop (SIGTERM/SIGINT): health
turns NOT_SERVING first so load balancers stop sending, then the server
stops accepting calls and lets in-flight ones finish within the grace
period, then the connection pool closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from sqlalchemy.exc import DBAPIError

from nuell_gateway.bootstrap import bootstrap_admin_from_settings
from nuell_gateway.config import Settings
from nuell_gateway.db.engine import create_engine, unreachable_message
from nuell_gateway.db.schema import ensure_schema_current
from nuell_gateway.interceptors import CallBoundary
from nuell_gateway.reflection import enable_reflection
from nuell_gateway.resources import Resources
from nuell_gateway.services import mount_services

logger = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

SERVER_OPTIONS = [
    # A second gateway on a busy port must fail loudly, not share it silently
    # (grpc enables SO_REUSEPORT by default on Linux).
    ("grpc.so_reuseport", 0),
]


class StartupError(RuntimeError):
    """The gateway cannot start; the message says what to do."""


def _check_bindable(address: str) -> None:
    """Raise OSError if `address` cannot be bound.

    grpc reports a failed bind on stderr in its own format before raising;
    trying first keeps the refusal to our one clear line.
    """
    host, port = address.rsplit(":", 1)
    with socket.create_server((host.strip("[]"), int(port))):
        pass


@dataclass(slots=True)
class Gateway:
    """A running gateway: its server, health, resources and bound port."""

    server: grpc.aio.Server
    health: HealthServicer
    resources: Resources
    port: int

    @classmethod
    async def start(cls, settings: Settings) -> Gateway:
        """Check the database, build everything and start serving."""
        engine = create_engine(settings)
        try:
            await ensure_schema_current(engine)
        except DBAPIError as exc:
            await engine.dispose()
            raise StartupError(unreachable_message(settings.sqlalchemy_url, exc)) from None
        except Exception:
            await engine.dispose()
            raise
        resources = Resources.build(settings, engine)
        try:
            await bootstrap_admin_from_settings(resources)
        except Exception:
            await resources.close()
            raise

        server = grpc.aio.server(interceptors=[CallBoundary(resources)], options=SERVER_OPTIONS)
        service_names = mount_services(server, resources)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        enable_reflection(server, [*service_names, HEALTH_SERVICE])
        try:
            _check_bindable(settings.gateway_addr)
            port = server.add_insecure_port(settings.gateway_addr)
        except (OSError, RuntimeError):
            await resources.close()
            raise StartupError(
                f"cannot listen on {settings.gateway_addr}: the port is in use or the address "
                "is not local; stop the other process or set NUELL_GATEWAY_ADDR"
            ) from None
        await server.start()
        for name in ["", *service_names]:
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return cls(server=server, health=health, resources=resources, port=port)

    async def stop(self) -> None:
        """NOT_SERVING, stop accepting, drain in-flight calls, close the pool."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.resources.settings.shutdown_grace_seconds)
        await self.resources.close()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    gateway = await Gateway.start(settings)
    host = settings.gateway_addr.rsplit(":", 1)[0]
    logger.info("serving", extra={"addr": f"{host}:{gateway.port}"})
    # The one line a runner or test reads to learn the real port.
    print(f"nuell_gateway listening on {host}:{gateway.port}", flush=True)

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await stop_requested.wait()
    logger.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await gateway.stop()
    logger.info("stopped")
