"""nuell.auth.v1.AuthService: registration, login and tokens (rules in `credentials`)."""

from __future__ import annotations

import grpc
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1 import auth_service_pb2_grpc

from nuell_gateway import accounts, credentials
from nuell_gateway.authz import caller
from nuell_gateway.convert import user_to_proto
from nuell_gateway.resources import Resources


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    """Accounts and tokens; OAuth2 password-flow semantics."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        user = await accounts.register(
            self._resources, email=request.email, password=request.password
        )
        return pb.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        tokens = await credentials.log_in(
            self._resources, email=request.email, password=request.password
        )
        return pb.LoginResponse(**tokens)

    async def Refresh(
        self, request: pb.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshResponse:
        tokens = await credentials.refresh(self._resources, refresh_token=request.refresh_token)
        return pb.RefreshResponse(**tokens)

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        await credentials.log_out(self._resources, refresh_token=request.refresh_token)
        return pb.LogoutResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        await credentials.change_password(
            self._resources,
            account=caller(),
            current_password=request.current_password,
            new_password=request.new_password,
        )
        return pb.ChangePasswordResponse()
