"""nuell.users.v1.UserService: accounts (rules in `accounts`)."""

from __future__ import annotations

import uuid

import grpc
from nuell.users.v1 import user_service_pb2 as pb
from nuell.users.v1 import user_service_pb2_grpc

from nuell_gateway import accounts
from nuell_gateway.authz import Role, caller
from nuell_gateway.convert import ROLE_FROM_PROTO, user_to_proto
from nuell_gateway.fieldmask import checked_paths
from nuell_gateway.resources import Resources
from nuell_gateway.services.etags import expected_version

IMMUTABLE_PATHS = frozenset({"id", "email", "create_time", "update_time", "etag"})


class UserService(user_service_pb2_grpc.UserServiceServicer):
    """Reading and managing accounts; admins manage roles and activation."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCurrentUserResponse:
        me = caller()
        user = await accounts.get_account(self._resources, viewer=me, user_id=me.user_id)
        return pb.GetCurrentUserResponse(user=user_to_proto(user))

    async def GetUser(
        self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserResponse:
        user = await accounts.get_account(
            self._resources, viewer=caller(), user_id=uuid.UUID(request.id)
        )
        return pb.GetUserResponse(user=user_to_proto(user))

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsersResponse:
        page, next_token = await accounts.list_accounts(
            self._resources, requested_page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListUsersResponse(
            users=[user_to_proto(u) for u in page], next_page_token=next_token
        )

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateUserResponse:
        paths = checked_paths(
            request.update_mask,
            mutable=accounts.SELF_PATHS | accounts.ADMIN_PATHS,
            immutable=IMMUTABLE_PATHS,
        )
        user_id = uuid.UUID(request.user.id)
        role = ROLE_FROM_PROTO.get(request.user.role)
        updated = await accounts.update_account(
            self._resources,
            editor=caller(),
            user_id=user_id,
            paths=paths,
            display_name=request.user.display_name,
            role=None if role is None else Role(role),
            is_active=request.user.is_active,
            expected_version=expected_version(user_id, request.user.etag),
        )
        return pb.UpdateUserResponse(user=user_to_proto(updated))

    async def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeactivateUserResponse:
        user = await accounts.deactivate_account(
            self._resources, editor=caller(), user_id=uuid.UUID(request.id)
        )
        return pb.DeactivateUserResponse(user=user_to_proto(user))
