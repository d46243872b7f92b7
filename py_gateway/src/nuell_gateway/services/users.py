"""nuell.users.v1.UserService: accounts."""

from __future__ import annotations

from nuell.users.v1 import user_service_pb2_grpc

from nuell_gateway.resources import Resources


class UserService(user_service_pb2_grpc.UserServiceServicer):
    """Not served yet: every RPC answers UNIMPLEMENTED through the call boundary."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
