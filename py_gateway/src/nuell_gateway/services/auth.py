"""nuell.auth.v1.AuthService: registration, login and tokens."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TypedDict

import grpc
from nuell.auth.v1 import auth_service_pb2 as pb
from nuell.auth.v1 import auth_service_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.authz import Role, caller, scope_string
from nuell_gateway.convert import user_to_proto
from nuell_gateway.db import refresh_tokens, users
from nuell_gateway.db.models import User
from nuell_gateway.errors import FieldViolation, InvalidArgument, Unauthenticated
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import new_refresh_token, refresh_token_digest

TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class TokenFields(TypedDict):
    """The fields LoginResponse and RefreshResponse share."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    scope: str


def _bad_credentials() -> Unauthenticated:
    # One answer for unknown email, wrong password and deactivated account.
    return Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")


def _bad_refresh_token() -> Unauthenticated:
    return Unauthenticated(
        "the refresh token is invalid, expired or revoked", reason="INVALID_REFRESH_TOKEN"
    )


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    """Accounts and tokens; OAuth2 password-flow semantics."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._refresh_ttl = timedelta(seconds=resources.settings.refresh_token_ttl_seconds)

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        hashed = await self._resources.passwords.hash(request.password)
        async with self._resources.sessions.begin() as session:
            user = await users.create_user(
                session, email=users.normalize_email(request.email), hashed_password=hashed
            )
        return pb.RegisterResponse(user=user_to_proto(user))

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        # Hashing happens outside any transaction, so logins never hold
        # pooled connections while the CPU works.
        async with self._resources.sessions() as session:
            user = await users.find_user_by_email(session, email=request.email)
        # Always verify, against a dummy hash when there is no account, so
        # every failure costs the same time.
        outcome = await self._resources.passwords.verify(
            user.hashed_password if user else None, request.password
        )
        if user is None or not outcome.ok or not user.is_active:
            raise _bad_credentials()
        async with self._resources.sessions.begin() as session:
            if outcome.rehashed:
                await users.update_user(
                    session,
                    user_id=user.id,
                    expected_version=None,
                    values={"hashed_password": outcome.rehashed},
                )
            fields = await self._issue_tokens(session, user=user, family_id=uuid7())
        return pb.LoginResponse(**fields)

    async def Refresh(
        self, request: pb.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshResponse:
        digest = refresh_token_digest(request.refresh_token)
        async with self._resources.sessions.begin() as session:
            spent = await refresh_tokens.spend_refresh_token(session, digest=digest)
            user = (
                await users.get_user(session, user_id=spent.user_id)
                if spent.outcome is refresh_tokens.SpendOutcome.SPENT and spent.user_id
                else None
            )
            if user is not None and user.is_active and spent.family_id is not None:
                fields = await self._issue_tokens(session, user=user, family_id=spent.family_id)
                return pb.RefreshResponse(**fields)
        # Outside the transaction: a detected reuse has revoked the family and
        # that must be committed even though this call fails.
        raise _bad_refresh_token()

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        digest = refresh_token_digest(request.refresh_token)
        async with self._resources.sessions.begin() as session:
            family_id = await refresh_tokens.find_family(session, digest=digest)
            if family_id is not None:
                await refresh_tokens.revoke_family(session, family_id=family_id)
        return pb.LogoutResponse()

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        me = caller()
        if request.new_password == request.current_password:
            raise InvalidArgument(
                "the new password must differ from the current one",
                reason="PASSWORD_UNCHANGED",
                violations=[
                    FieldViolation(
                        field="new_password",
                        description="must differ from the current password",
                        reason="password.unchanged",
                    )
                ],
            )
        async with self._resources.sessions() as session:
            user = await users.get_user(session, user_id=me.user_id)
        outcome = await self._resources.passwords.verify(
            user.hashed_password if user else None, request.current_password
        )
        if user is None or not outcome.ok:
            raise Unauthenticated("the current password is wrong", reason="INVALID_CREDENTIALS")
        hashed = await self._resources.passwords.hash(request.new_password)
        async with self._resources.sessions.begin() as session:
            await users.update_user(
                session, user_id=user.id, expected_version=None, values={"hashed_password": hashed}
            )
            await refresh_tokens.revoke_all_for_user(session, user_id=user.id)
        return pb.ChangePasswordResponse()

    async def _issue_tokens(
        self, session: AsyncSession, *, user: User, family_id: uuid.UUID
    ) -> TokenFields:
        scopes = scope_string(Role(user.role))
        access = self._resources.access_tokens.issue(user_id=user.id, scopes=scopes)
        refresh = new_refresh_token()
        await refresh_tokens.store_refresh_token(
            session,
            user_id=user.id,
            family_id=family_id,
            digest=refresh.digest,
            ttl=self._refresh_ttl,
        )
        return TokenFields(
            access_token=access.token,
            token_type=TOKEN_TYPE,
            expires_in=access.expires_in,
            refresh_token=refresh.value,
            scope=scopes,
        )
