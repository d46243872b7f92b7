"""Who may call what: the one table of required scopes, and ownership rules.

Every RPC of the contract has exactly one entry in `POLICIES` (a test
enforces it, and an RPC missing from it is refused). The call boundary
checks the scope before any work; servicers apply the ownership rules
below once they know whose resource it is. The authenticated caller
travels in a `ContextVar`, set by the boundary, read with `caller()`.
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nuell_gateway.errors import PermissionDenied, Unauthenticated
from nuell_gateway.security.tokens import InvalidTokenError

if TYPE_CHECKING:
    from nuell_gateway.resources import Resources

logger = logging.getLogger(__name__)


class Scope(StrEnum):
    """Permissions an access token can carry."""

    PROFILE = "profile"
    POSTS = "posts"
    COMPUTE = "compute"
    USERS_ADMIN = "users:admin"
    POSTS_MODERATE = "posts:moderate"
    SESSIONS_ADMIN = "sessions:admin"


class Role(StrEnum):
    """Account roles as stored in `users.role`."""

    USER = "user"
    ADMIN = "admin"


ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.USER: frozenset({Scope.PROFILE, Scope.POSTS, Scope.COMPUTE}),
    Role.ADMIN: frozenset(Scope),
}


def scope_string(role: Role) -> str:
    """The space-separated `scope` claim for `role`, in a stable order."""
    return " ".join(sorted(ROLE_SCOPES[role]))


@dataclass(frozen=True, slots=True)
class Policy:
    """What an RPC requires: nothing (`public`) or one scope."""

    scope: Scope | None

    @property
    def public(self) -> bool:
        return self.scope is None


PUBLIC = Policy(scope=None)

POLICIES: dict[str, Policy] = {
    # Load balancers and orchestrators ask without a token.
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/nuell.auth.v1.AuthService/Register": PUBLIC,
    "/nuell.auth.v1.AuthService/Login": PUBLIC,
    "/nuell.auth.v1.AuthService/Refresh": PUBLIC,
    "/nuell.auth.v1.AuthService/Logout": PUBLIC,
    "/nuell.auth.v1.AuthService/ChangePassword": Policy(Scope.PROFILE),
    # The token in the request is the credential (a mail link).
    "/nuell.auth.v1.AuthService/VerifyEmail": PUBLIC,
    "/nuell.auth.v1.AuthService/ResendVerification": PUBLIC,
    "/nuell.auth.v1.AuthService/RequestPasswordReset": PUBLIC,
    "/nuell.auth.v1.AuthService/ResetPassword": PUBLIC,
    "/nuell.auth.v1.AuthService/RequestEmailChange": Policy(Scope.PROFILE),
    "/nuell.auth.v1.AuthService/ConfirmEmailChange": PUBLIC,
    # The mfa_token in the request is the credential (a Login's first half).
    "/nuell.auth.v1.AuthService/VerifyMfa": PUBLIC,
    "/nuell.auth.v1.AuthService/EnrollTotp": Policy(Scope.PROFILE),
    "/nuell.auth.v1.AuthService/ConfirmTotp": Policy(Scope.PROFILE),
    "/nuell.auth.v1.AuthService/DisableTotp": Policy(Scope.PROFILE),
    # Own sessions and events with `profile`; anyone's with `sessions:admin`.
    "/nuell.sessions.v1.SessionService/ListSessions": Policy(Scope.PROFILE),
    "/nuell.sessions.v1.SessionService/RevokeSession": Policy(Scope.PROFILE),
    "/nuell.sessions.v1.SessionService/RevokeOtherSessions": Policy(Scope.PROFILE),
    "/nuell.sessions.v1.SessionService/ListAuditEvents": Policy(Scope.PROFILE),
    "/nuell.users.v1.UserService/GetCurrentUser": Policy(Scope.PROFILE),
    # Own account with `profile`; anyone's with `users:admin` (ownership below).
    "/nuell.users.v1.UserService/GetUser": Policy(Scope.PROFILE),
    "/nuell.users.v1.UserService/ListUsers": Policy(Scope.USERS_ADMIN),
    # Own `display_name` with `profile`; role and is_active with `users:admin`.
    "/nuell.users.v1.UserService/UpdateUser": Policy(Scope.PROFILE),
    "/nuell.users.v1.UserService/DeactivateUser": Policy(Scope.USERS_ADMIN),
    "/nuell.posts.v1.PostService/CreatePost": Policy(Scope.POSTS),
    "/nuell.posts.v1.PostService/GetPost": Policy(Scope.POSTS),
    "/nuell.posts.v1.PostService/ListPosts": Policy(Scope.POSTS),
    # The author with `posts`; anyone's with `posts:moderate`.
    "/nuell.posts.v1.PostService/UpdatePost": Policy(Scope.POSTS),
    "/nuell.posts.v1.PostService/DeletePost": Policy(Scope.POSTS),
    # Moderators' streams also carry deactivated authors' posts.
    "/nuell.posts.v1.PostService/WatchPosts": Policy(Scope.POSTS),
    # Visibility as in ListPosts: deactivated authors' posts only with `posts:moderate`.
    "/nuell.posts.v1.PostService/SearchPosts": Policy(Scope.POSTS),
    "/nuell.posts.v1.PostService/ListSimilarPosts": Policy(Scope.POSTS),
    "/nuell.compute.v1.ComputeService/Analyze": Policy(Scope.COMPUTE),
    "/nuell.compute.v1.ComputeService/Compare": Policy(Scope.COMPUTE),
    "/nuell.compute.v1.ComputeService/FindNearDuplicates": Policy(Scope.COMPUTE),
    "/nuell.compute.v1.ComputeService/AnalyzeStream": Policy(Scope.COMPUTE),
    "/nuell.compute.v1.ComputeService/Tokenize": Policy(Scope.COMPUTE),
    "/nuell.compute.v1.ComputeService/CompareMany": Policy(Scope.COMPUTE),
}


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated account behind the current call."""

    user_id: uuid.UUID
    role: Role
    # The session the access token belongs to (its `sid`).
    session_id: uuid.UUID
    # The token's scopes narrowed to what the account's current role allows,
    # so a demotion takes effect before old tokens expire.
    scopes: frozenset[str]

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    def require(self, scope: Scope) -> None:
        if not self.has(scope):
            raise PermissionDenied(
                f"this call needs the `{scope}` scope",
                reason="MISSING_SCOPE",
                metadata={"scope": str(scope)},
            )

    def require_self_or(self, owner_id: uuid.UUID, override: Scope) -> None:
        """Allow the owner, or a caller holding `override` (an admin scope)."""
        if owner_id != self.user_id:
            self.require(override)


_current_caller: ContextVar[Caller | None] = ContextVar("nuell_caller", default=None)


def caller() -> Caller:
    """The authenticated caller; only public RPCs run without one."""
    current = _current_caller.get()
    if current is None:
        raise Unauthenticated("this call needs an access token", reason="MISSING_TOKEN")
    return current


def set_caller(value: Caller | None) -> None:
    """Used by the call boundary alone, once per call (each call has its own context)."""
    _current_caller.set(value)


def bearer_token(metadata: Any) -> str:
    """The access token of a call's `authorization: Bearer <token>` metadata."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization header must be `Bearer <access token>`",
                    reason="INVALID_TOKEN",
                )
            return token.strip()
    raise Unauthenticated("this call needs an access token", reason="MISSING_TOKEN")


async def authenticate(resources: Resources, token: str) -> Caller:
    """The caller an access token speaks for now: UNAUTHENTICATED if it is
    invalid or expired, its account is inactive or has revoked it, or its
    session has ended."""
    try:
        claims = resources.access_tokens.verify(token)
    except InvalidTokenError as exc:
        logger.info("rejected access token", extra={"why": str(exc)})
        raise Unauthenticated(
            "the access token is invalid or expired", reason="INVALID_TOKEN"
        ) from None
    # The account's current state, not the token's: a deactivation or a
    # demotion takes effect on the next call (account_states.py).
    state = await resources.accounts.state(claims.user_id)
    if state is None or not state.is_active:
        raise Unauthenticated("the account is not active", reason="ACCOUNT_INACTIVE")
    if claims.generation != state.token_generation:
        # Issued before a password reset or an email change.
        raise Unauthenticated("the access token was revoked; sign in again", reason="TOKEN_REVOKED")
    if not await resources.accounts.session_is_live(claims.session_id, claims.user_id):
        raise Unauthenticated("the session has ended; sign in again", reason="SESSION_ENDED")
    role = Role(state.role)
    return Caller(
        user_id=uuid.UUID(str(claims.user_id)),
        role=role,
        session_id=claims.session_id,
        scopes=claims.scopes & ROLE_SCOPES[role],
    )
