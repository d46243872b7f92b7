"""A valid request for every RPC of the contract, keyed by `Service/Method`.

Tests that must exercise every RPC (authorization tables, error mapping)
start from these, so a new RPC fails loudly until it has a sample here.
"""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from nuell.auth.v1 import auth_service_pb2 as auth
from nuell.compute.v1 import compute_service_pb2 as compute
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts
from nuell.sessions.v1 import session_service_pb2 as sessions
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users

SOME_ID = "01936f0e-3c2a-7b4d-8e5f-0123456789ab"
STRONG_PASSWORD = "Correct-Horse-42"
# Well-formed (URL-safe, 43 characters like the real ones) but never issued.
SOME_TOKEN = "q1X2w3E4r5T6y7U8i9O0p1A2s3D4f5G6h7J8k9L0z1X"

VALID_REQUESTS: dict[str, Message] = {
    "nuell.auth.v1.AuthService/Register": auth.RegisterRequest(
        email="ada@example.com", password=STRONG_PASSWORD
    ),
    "nuell.auth.v1.AuthService/Login": auth.LoginRequest(
        email="ada@example.com", password=STRONG_PASSWORD
    ),
    "nuell.auth.v1.AuthService/Refresh": auth.RefreshRequest(refresh_token="opaque"),
    "nuell.auth.v1.AuthService/Logout": auth.LogoutRequest(refresh_token="opaque"),
    "nuell.auth.v1.AuthService/ChangePassword": auth.ChangePasswordRequest(
        current_password=STRONG_PASSWORD, new_password="Another-Horse-43"
    ),
    "nuell.auth.v1.AuthService/VerifyEmail": auth.VerifyEmailRequest(token=SOME_TOKEN),
    "nuell.auth.v1.AuthService/ResendVerification": auth.ResendVerificationRequest(
        email="ada@example.com"
    ),
    "nuell.auth.v1.AuthService/RequestPasswordReset": auth.RequestPasswordResetRequest(
        email="ada@example.com"
    ),
    "nuell.auth.v1.AuthService/ResetPassword": auth.ResetPasswordRequest(
        token=SOME_TOKEN, new_password="Another-Horse-43"
    ),
    "nuell.auth.v1.AuthService/RequestEmailChange": auth.RequestEmailChangeRequest(
        new_email="ada.new@example.com", current_password=STRONG_PASSWORD
    ),
    "nuell.auth.v1.AuthService/ConfirmEmailChange": auth.ConfirmEmailChangeRequest(
        token=SOME_TOKEN
    ),
    "nuell.auth.v1.AuthService/VerifyMfa": auth.VerifyMfaRequest(
        mfa_token=SOME_TOKEN, code="123456"
    ),
    "nuell.auth.v1.AuthService/EnrollTotp": auth.EnrollTotpRequest(
        current_password=STRONG_PASSWORD
    ),
    "nuell.auth.v1.AuthService/ConfirmTotp": auth.ConfirmTotpRequest(code="123456"),
    "nuell.auth.v1.AuthService/DisableTotp": auth.DisableTotpRequest(code="123456"),
    "nuell.sessions.v1.SessionService/ListSessions": sessions.ListSessionsRequest(page_size=10),
    "nuell.sessions.v1.SessionService/RevokeSession": sessions.RevokeSessionRequest(id=SOME_ID),
    "nuell.sessions.v1.SessionService/RevokeOtherSessions": sessions.RevokeOtherSessionsRequest(),
    "nuell.sessions.v1.SessionService/ListAuditEvents": sessions.ListAuditEventsRequest(
        page_size=10
    ),
    "nuell.users.v1.UserService/GetCurrentUser": users.GetCurrentUserRequest(),
    "nuell.users.v1.UserService/GetUser": users.GetUserRequest(id=SOME_ID),
    "nuell.users.v1.UserService/ListUsers": users.ListUsersRequest(page_size=10),
    "nuell.users.v1.UserService/UpdateUser": users.UpdateUserRequest(
        user=user_pb2.User(id=SOME_ID, display_name="Ada"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    ),
    "nuell.users.v1.UserService/DeactivateUser": users.DeactivateUserRequest(id=SOME_ID),
    "nuell.posts.v1.PostService/CreatePost": posts.CreatePostRequest(content="hello"),
    "nuell.posts.v1.PostService/GetPost": posts.GetPostRequest(id=SOME_ID),
    "nuell.posts.v1.PostService/ListPosts": posts.ListPostsRequest(page_size=10),
    "nuell.posts.v1.PostService/UpdatePost": posts.UpdatePostRequest(
        post=post_pb2.Post(id=SOME_ID, content="edited"),
        update_mask=field_mask_pb2.FieldMask(paths=["content"]),
    ),
    "nuell.posts.v1.PostService/DeletePost": posts.DeletePostRequest(id=SOME_ID),
    "nuell.posts.v1.PostService/WatchPosts": posts.WatchPostsRequest(author_id=SOME_ID),
    "nuell.posts.v1.PostService/SearchPosts": posts.SearchPostsRequest(query="東京 rust"),
    "nuell.posts.v1.PostService/ListSimilarPosts": posts.ListSimilarPostsRequest(id=SOME_ID),
    "nuell.compute.v1.ComputeService/Analyze": compute.AnalyzeRequest(text="hello world"),
    "nuell.compute.v1.ComputeService/Compare": compute.CompareRequest(a="a b c", b="a b d"),
    "nuell.compute.v1.ComputeService/FindNearDuplicates": compute.FindNearDuplicatesRequest(
        documents=[compute.Document(id="1", text="a b c"), compute.Document(id="2", text="a b")],
        threshold=0.5,
    ),
    "nuell.compute.v1.ComputeService/AnalyzeStream": compute.AnalyzeStreamRequest(
        id="1", text="hello"
    ),
    "nuell.compute.v1.ComputeService/Tokenize": compute.TokenizeRequest(
        texts=["東京都に住む", "hello world"], band_keys=True
    ),
    "nuell.compute.v1.ComputeService/CompareMany": compute.CompareManyRequest(
        text="a b c d", others=["a b c e", "x y"]
    ),
}


# Search queries full of to_tsquery's operators and quoting: each must be
# searched as text, never reach PostgreSQL as syntax.
HOSTILE_QUERIES = [
    "&",
    "a & b",
    "a | b",
    "!a",
    "a:*",
    "(a",
    "a)",
    "a <-> b",
    "a <2> b",
    "<->",
    "'a'",
    "a'",
    "''",
    "\\",
    "a\\",
    "\\'",
    "東京&|!:*()<->京都",
    '"unclosed 東京',
    '"',
    "***",
    "a*b*",
    "*a",
    "'; DROP TABLE posts; --",
    "a:A & b:B",
    "!!!a",
    "東京 & !京都",
    "｜＆！：＊（）",  # noqa: RUF001 - the full-width forms of the operators
]
