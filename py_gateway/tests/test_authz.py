"""Every RPC for every kind of caller: the authorization table, end to end.

Callers: anonymous (no token), the resource's owner (`self`), another user
(`other`), a deactivated user holding a once-valid token, and an admin. The
target resource is always the owner's. A new RPC fails here until it has a
row, and `authz.POLICIES` must name every RPC of the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from nuell.auth.v1 import auth_service_pb2 as auth
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts
from nuell.sessions.v1 import session_service_pb2 as sessions
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users
from sqlalchemy import update
from uuid_utils.compat import uuid7

from nuell_gateway.authz import POLICIES, Role
from nuell_gateway.db.models import User
from nuell_gateway.server import Gateway
from tests.utils.factories import TestUser, bearer, make_post, make_user
from tests.utils.rpc import call_any, contract_methods, method_path
from tests.utils.samples import STRONG_PASSWORD, VALID_REQUESTS

OK = grpc.StatusCode.OK
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
BAD = grpc.StatusCode.INVALID_ARGUMENT  # a well-formed token that was never issued
NOT_NOW = grpc.StatusCode.FAILED_PRECONDITION
MISSING = grpc.StatusCode.NOT_FOUND

CALLERS = ("anonymous", "self", "other", "deactivated", "admin")


@dataclass
class World:
    owner: TestUser
    refresh_token: str
    post_id: str


Build = Callable[[World], Message]


def _sample(path: str) -> Build:
    return lambda world: VALID_REQUESTS[path]


def _sample_path(method: str) -> Build:
    return _sample(f"nuell.auth.v1.AuthService/{method}")


# RPC (with a variant after `#`) -> request builder, expected code per caller.
TABLE: dict[str, tuple[Build, tuple[grpc.StatusCode, ...]]] = {
    "nuell.auth.v1.AuthService/Register": (
        lambda w: auth.RegisterRequest(
            email=f"new-{uuid7().hex}@example.com", password=STRONG_PASSWORD
        ),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/Login": (
        lambda w: auth.LoginRequest(email=w.owner.email, password=STRONG_PASSWORD),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/Refresh": (
        lambda w: auth.RefreshRequest(refresh_token=w.refresh_token),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/Logout": (
        lambda w: auth.LogoutRequest(refresh_token=w.refresh_token),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/ChangePassword": (
        lambda w: auth.ChangePasswordRequest(
            current_password=STRONG_PASSWORD, new_password="Another-Horse-43"
        ),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    # The token in the request is the credential; an access token changes nothing.
    "nuell.auth.v1.AuthService/VerifyEmail": (_sample_path("VerifyEmail"), (BAD,) * 5),
    "nuell.auth.v1.AuthService/ResendVerification": (
        lambda w: auth.ResendVerificationRequest(email=w.owner.email),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/RequestPasswordReset": (
        lambda w: auth.RequestPasswordResetRequest(email=w.owner.email),
        (OK, OK, OK, OK, OK),
    ),
    "nuell.auth.v1.AuthService/ResetPassword": (_sample_path("ResetPassword"), (BAD,) * 5),
    "nuell.auth.v1.AuthService/RequestEmailChange": (
        lambda w: auth.RequestEmailChangeRequest(
            new_email=f"moved-{uuid7().hex}@example.com", current_password=STRONG_PASSWORD
        ),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.auth.v1.AuthService/ConfirmEmailChange": (
        _sample_path("ConfirmEmailChange"),
        (BAD,) * 5,
    ),
    "nuell.users.v1.UserService/GetCurrentUser": (
        lambda w: users.GetCurrentUserRequest(),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/GetUser": (
        lambda w: users.GetUserRequest(id=str(w.owner.id)),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/ListUsers": (
        lambda w: users.ListUsersRequest(),
        (UNAUTH, DENIED, DENIED, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/UpdateUser": (
        lambda w: users.UpdateUserRequest(
            user=user_pb2.User(id=str(w.owner.id), display_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/UpdateUser#role": (
        lambda w: users.UpdateUserRequest(
            user=user_pb2.User(id=str(w.owner.id), role=user_pb2.ROLE_ADMIN),
            update_mask=field_mask_pb2.FieldMask(paths=["role"]),
        ),
        (UNAUTH, DENIED, DENIED, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/UpdateUser#is_active": (
        lambda w: users.UpdateUserRequest(
            user=user_pb2.User(id=str(w.owner.id), is_active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["is_active"]),
        ),
        (UNAUTH, DENIED, DENIED, UNAUTH, OK),
    ),
    "nuell.users.v1.UserService/DeactivateUser": (
        lambda w: users.DeactivateUserRequest(id=str(w.owner.id)),
        (UNAUTH, DENIED, DENIED, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/CreatePost": (
        lambda w: posts.CreatePostRequest(content="mine"),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/GetPost": (
        lambda w: posts.GetPostRequest(id=w.post_id),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/ListPosts": (
        lambda w: posts.ListPostsRequest(author_id=str(w.owner.id)),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/UpdatePost": (
        lambda w: posts.UpdatePostRequest(
            post=post_pb2.Post(id=w.post_id, content="edited"),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        ),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/DeletePost": (
        lambda w: posts.DeletePostRequest(id=w.post_id),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/WatchPosts": (
        lambda w: posts.WatchPostsRequest(author_id=str(w.owner.id)),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/SearchPosts": (
        lambda w: posts.SearchPostsRequest(query="mine"),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.posts.v1.PostService/ListSimilarPosts": (
        lambda w: posts.ListSimilarPostsRequest(id=w.post_id),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    # The mfa_token is the credential; one never issued is refused whoever calls.
    "nuell.auth.v1.AuthService/VerifyMfa": (_sample_path("VerifyMfa"), (UNAUTH,) * 5),
    "nuell.auth.v1.AuthService/EnrollTotp": (
        _sample_path("EnrollTotp"),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    # Allowed, and refused for what the caller's own account is in (nothing enrolled).
    "nuell.auth.v1.AuthService/ConfirmTotp": (
        _sample_path("ConfirmTotp"),
        (UNAUTH, NOT_NOW, NOT_NOW, UNAUTH, NOT_NOW),
    ),
    "nuell.auth.v1.AuthService/DisableTotp": (
        _sample_path("DisableTotp"),
        (UNAUTH, NOT_NOW, NOT_NOW, UNAUTH, NOT_NOW),
    ),
    "nuell.sessions.v1.SessionService/ListSessions": (
        lambda w: sessions.ListSessionsRequest(user_id=str(w.owner.id)),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    "nuell.sessions.v1.SessionService/ListSessions#own": (
        lambda w: sessions.ListSessionsRequest(),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    # Another account's session is NOT_FOUND, as if it did not exist.
    "nuell.sessions.v1.SessionService/RevokeSession": (
        lambda w: sessions.RevokeSessionRequest(id=str(w.owner.session_id)),
        (UNAUTH, OK, MISSING, UNAUTH, OK),
    ),
    "nuell.sessions.v1.SessionService/RevokeOtherSessions": (
        lambda w: sessions.RevokeOtherSessionsRequest(),
        (UNAUTH, OK, OK, UNAUTH, OK),
    ),
    "nuell.sessions.v1.SessionService/ListAuditEvents": (
        lambda w: sessions.ListAuditEventsRequest(user_id=str(w.owner.id)),
        (UNAUTH, OK, DENIED, UNAUTH, OK),
    ),
    **{
        path: (_sample(path), (UNAUTH, OK, OK, UNAUTH, OK))
        for path in VALID_REQUESTS
        if path.startswith("nuell.compute.v1.")
    },
}


def test_every_contract_rpc_has_exactly_one_policy() -> None:
    paths = {method_path(m) for m in contract_methods()}
    health = {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
    assert set(POLICIES) == paths | health
    assert all(POLICIES[path].public for path in health)


def test_every_contract_rpc_has_a_row() -> None:
    rows = {"/" + key.split("#")[0] for key in TABLE}
    assert rows == {method_path(m) for m in contract_methods()}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("row", sorted(TABLE))
async def test_authorization_table(
    gateway: Gateway, channel: grpc.aio.Channel, row: str, caller: str
) -> None:
    sessions, tokens = gateway.resources.sessions, gateway.resources.access_tokens
    owner = await make_user(sessions)
    login = await channel.unary_unary(
        "/nuell.auth.v1.AuthService/Login",
        request_serializer=auth.LoginRequest.SerializeToString,
        response_deserializer=auth.LoginResponse.FromString,
    )(auth.LoginRequest(email=owner.email, password=STRONG_PASSWORD))
    callers: dict[str, TestUser | None] = {
        "anonymous": None,
        "self": owner,
        "other": await make_user(sessions),
        "deactivated": await make_user(sessions),
        "admin": await make_user(sessions, role=Role.ADMIN),
    }
    metadata = {name: bearer(tokens, user) if user else () for name, user in callers.items()}
    deactivated = callers["deactivated"]
    assert deactivated is not None
    async with sessions.begin() as session:
        await session.execute(update(User).where(User.id == deactivated.id).values(is_active=False))

    build, expected = TABLE[row]
    path = "/" + row.split("#")[0]
    method = next(m for m in contract_methods() if method_path(m) == path)
    post_id = await make_post(sessions, author=owner)
    request = build(World(owner=owner, refresh_token=login.refresh_token, post_id=str(post_id)))
    try:
        await call_any(channel, method, request, metadata=metadata[caller])
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        code = error.code()
    assert code == expected[CALLERS.index(caller)]
