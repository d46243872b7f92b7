"""nuell.auth.v1.AuthService: registration, login and tokens."""

from __future__ import annotations

from nuell.auth.v1 import auth_service_pb2_grpc

from nuell_gateway.resources import Resources


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    """Not served yet: every RPC answers UNIMPLEMENTED through the call boundary."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
