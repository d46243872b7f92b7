"""The one place where every service the gateway serves is registered."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from nuell.compute.v1 import compute_service_pb2, compute_service_pb2_grpc
from nuell.posts.v1 import post_service_pb2, post_service_pb2_grpc
from nuell.sessions.v1 import session_service_pb2, session_service_pb2_grpc
from nuell.users.v1 import user_service_pb2, user_service_pb2_grpc

from nuell_gateway.boundary import CallBoundary
from nuell_gateway.resources import Resources
from nuell_gateway.services.auth import AuthService
from nuell_gateway.services.compute import ComputeService
from nuell_gateway.services.posts import PostService
from nuell_gateway.services.sessions import SessionService
from nuell_gateway.services.users import UserService


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """A proto service, how to build its servicer and how to mount it."""

    name: str
    build: Callable[[Resources], Any]
    add_to_server: Callable[[Any, grpc.aio.Server], None]


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
        AuthService,
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server,
    ),
    ServiceEntry(
        user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
        UserService,
        user_service_pb2_grpc.add_UserServiceServicer_to_server,
    ),
    ServiceEntry(
        post_service_pb2.DESCRIPTOR.services_by_name["PostService"].full_name,
        PostService,
        post_service_pb2_grpc.add_PostServiceServicer_to_server,
    ),
    ServiceEntry(
        compute_service_pb2.DESCRIPTOR.services_by_name["ComputeService"].full_name,
        ComputeService,
        compute_service_pb2_grpc.add_ComputeServiceServicer_to_server,
    ),
    ServiceEntry(
        session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
        SessionService,
        session_service_pb2_grpc.add_SessionServiceServicer_to_server,
    ),
)


def mount_services(
    server: grpc.aio.Server, resources: Resources, health: HealthServicer
) -> list[str]:
    """Add every servicer and `health` to `server`, inside the call boundary
    (so a health check in Connect's JSON, say, is decoded like any call);
    return the full names of the services other than health."""
    boundary = CallBoundary(resources)
    for entry in SERVICES:
        boundary.mount(server, entry.add_to_server, entry.build(resources))
    boundary.mount(server, health_pb2_grpc.add_HealthServicer_to_server, health)
    return [entry.name for entry in SERVICES]
