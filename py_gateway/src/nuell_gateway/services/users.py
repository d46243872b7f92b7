"""nuell.users.v1.UserService: accounts."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from nuell.users.v1 import user_service_pb2 as pb
from nuell.users.v1 import user_service_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession

from nuell_gateway import text_rules
from nuell_gateway.authz import Scope, caller
from nuell_gateway.convert import ROLE_FROM_PROTO, user_to_proto, version_from_etag
from nuell_gateway.db import hot_reads, refresh_tokens, users
from nuell_gateway.db.models import User
from nuell_gateway.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from nuell_gateway.fieldmask import checked_paths
from nuell_gateway.pagination import page_size
from nuell_gateway.resources import Resources

SELF_PATHS = frozenset({"display_name"})
ADMIN_PATHS = frozenset({"role", "is_active"})
IMMUTABLE_PATHS = frozenset({"id", "email", "create_time", "update_time", "etag"})
LIST_SCOPE = "users.list"


def _not_found(user_id: uuid.UUID | str) -> NotFound:
    return NotFound(
        "no account has this id", reason="USER_NOT_FOUND", metadata={"id": str(user_id)}
    )


def _stale() -> Aborted:
    return Aborted(
        "the account changed since you read it; read it again and retry",
        reason="ETAG_MISMATCH",
    )


class UserService(user_service_pb2_grpc.UserServiceServicer):
    """Reading and managing accounts; admins manage roles and activation."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCurrentUserResponse:
        me = caller()
        user = await hot_reads.get_user(self._resources.hot_reads, user_id=me.user_id)
        if user is None:
            raise _not_found(me.user_id)
        return pb.GetCurrentUserResponse(user=user_to_proto(user))

    async def GetUser(
        self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUserResponse:
        user_id = uuid.UUID(request.id)
        # Before the lookup, so a non-admin learns nothing about other ids.
        caller().require_self_or(user_id, Scope.USERS_ADMIN)
        user = await hot_reads.get_user(self._resources.hot_reads, user_id=user_id)
        if user is None:
            raise _not_found(user_id)
        return pb.GetUserResponse(user=user_to_proto(user))

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsersResponse:
        limit = page_size(request.page_size)
        tokens = self._resources.page_tokens
        after = tokens.position(request.page_token, scope=LIST_SCOPE)
        async with self._resources.sessions() as session:
            # One extra row tells whether another page exists.
            rows = await users.list_users(session, after=after, limit=limit + 1)
        page, next_token = tokens.next_page(rows, limit, scope=LIST_SCOPE)
        return pb.ListUsersResponse(
            users=[user_to_proto(u) for u in page], next_page_token=next_token
        )

    async def UpdateUser(
        self, request: pb.UpdateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateUserResponse:
        me = caller()
        paths = checked_paths(
            request.update_mask, mutable=SELF_PATHS | ADMIN_PATHS, immutable=IMMUTABLE_PATHS
        )
        user_id = uuid.UUID(request.user.id)
        me.require_self_or(user_id, Scope.USERS_ADMIN)
        if paths & ADMIN_PATHS:
            me.require(Scope.USERS_ADMIN)
        values: dict[str, Any] = {}
        if "display_name" in paths:
            values["display_name"] = text_rules.display_name(request.user.display_name)
        if "role" in paths:
            if request.user.role not in ROLE_FROM_PROTO:
                raise InvalidArgument(
                    "role must be ROLE_USER or ROLE_ADMIN",
                    reason="INVALID_ROLE",
                    violations=[FieldViolation("user.role", "must be a defined role", "enum.role")],
                )
            values["role"] = ROLE_FROM_PROTO[request.user.role]
        if "is_active" in paths:
            values["is_active"] = request.user.is_active

        async with self._resources.sessions.begin() as session:
            admins = await users.lock_active_admin_ids(session) if paths & ADMIN_PATHS else set()
            current = await self._current(session, user_id, request.user.etag)
            _ensure_an_admin_remains(current, values, admins)
            updated = await users.update_user(
                session, user_id=user_id, expected_version=current.version, values=values
            )
            if updated is None:
                raise _stale()
            if current.is_active and not updated.is_active:
                await refresh_tokens.revoke_all_for_user(session, user_id=user_id)
        self._resources.accounts.evict(user_id)
        return pb.UpdateUserResponse(user=user_to_proto(updated))

    async def DeactivateUser(
        self, request: pb.DeactivateUserRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeactivateUserResponse:
        user_id = uuid.UUID(request.id)
        async with self._resources.sessions.begin() as session:
            admins = await users.lock_active_admin_ids(session)
            current = await self._current(session, user_id, etag_value="")
            if not current.is_active:
                return pb.DeactivateUserResponse(user=user_to_proto(current))
            values = {"is_active": False}
            _ensure_an_admin_remains(current, values, admins)
            updated = await users.update_user(
                session, user_id=user_id, expected_version=None, values=values
            )
            assert updated is not None  # the row is locked by _current
            await refresh_tokens.revoke_all_for_user(session, user_id=user_id)
        self._resources.accounts.evict(user_id)
        return pb.DeactivateUserResponse(user=user_to_proto(updated))

    async def _current(self, session: AsyncSession, user_id: uuid.UUID, etag_value: str) -> User:
        """The row to change, locked; NOT_FOUND or ABORTED (stale etag) otherwise."""
        user = await session.get(User, user_id, with_for_update=True)
        if user is None:
            raise _not_found(user_id)
        if etag_value and version_from_etag(user.id, etag_value) != user.version:
            raise _stale()
        return user


def _ensure_an_admin_remains(current: User, values: dict[str, Any], admins: set[uuid.UUID]) -> None:
    """FAILED_PRECONDITION if the change would leave no active admin.

    `admins` are the active admins, locked first (in id order) by the
    transaction, so that two admins demoting each other serialise instead of
    both succeeding, and never deadlock.
    """
    role = values.get("role", current.role)
    active = values.get("is_active", current.is_active)
    if current.id not in admins or (role == "admin" and active) or admins - {current.id}:
        return
    raise FailedPrecondition(
        "this is the last active admin; make another admin first", reason="LAST_ADMIN"
    )
