"""No user content, token or password reaches a log line, on any error path.

Every request below fails (or degrades) in its own way while carrying
canaries: post content, display names, passwords, tokens. The gateway logs
at DEBUG through its real JSON formatter; the canaries must appear in none
of it, while the lines each path is known to write must be there, so the
paths were really taken. Exceptions are logged by their stack and type
only, since their messages quote data (PostgreSQL's DETAIL prints the
failing row).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from nuell.auth.v1 import auth_service_pb2 as auth_pb
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub
from nuell.posts.v1 import post_pb2, post_service_pb2_grpc
from nuell.posts.v1 import post_service_pb2 as posts_pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.boundary import CallBoundary
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.log import JsonFormatter
from nuell_gateway.request_id import CallIdentityFilter
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from tests.conftest import make_settings
from tests.utils.database import libpq, throwaway_database
from tests.utils.factories import bearer, make_post, make_user
from tests.utils.samples import STRONG_PASSWORD

CONTENT = "秘密の下書き-canary-content"
NAME = "秘密の名前-canary-name"
PASSWORD = "Canary-Password-9876"
TOKEN = "canary.token.value"
LINK_TOKEN = "canary-mail-link-token-0123456789abcdefghijk"
CANARIES = (CONTENT, NAME, PASSWORD, TOKEN, LINK_TOKEN, "canary")


@pytest.fixture
def gateway_log() -> Iterator[io.StringIO]:
    """Everything logged meanwhile, as the gateway's JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallIdentityFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _assert_clean(log: io.StringIO, *expected_messages: str) -> None:
    text = log.getvalue()
    for message in expected_messages:
        assert f'"message": "{message}' in text, f"no {message!r} line: the path was not taken"
    for canary in CANARIES:
        assert canary not in text


async def _fails(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_refusals_of_every_kind_log_no_content_token_or_password(
    channel: grpc.aio.Channel, resources: Resources, gateway_log: io.StringIO
) -> None:
    alice = await make_user(resources.sessions, email="alice-canary@example.com")
    bob = await make_user(resources.sessions)
    post_id = await make_post(resources.sessions, author=alice, content="アリスの投稿")
    as_alice, as_bob = bearer(resources.access_tokens, alice), bearer(resources.access_tokens, bob)
    auth, posts, users = (
        AuthServiceStub(channel),
        PostServiceStub(channel),
        UserServiceStub(channel),
    )

    def edit(content: str, etag: str = "") -> posts_pb.UpdatePostRequest:
        return posts_pb.UpdatePostRequest(
            post=post_pb2.Post(id=str(post_id), content=content, etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        )

    rename = users_pb.UpdateUserRequest(
        user=user_pb2.User(id=str(alice.id), display_name=NAME + "\u202e"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    refusals = {
        "too long": posts.CreatePost(
            posts_pb.CreatePostRequest(content=CONTENT * 400), metadata=as_alice
        ),
        "someone else's": posts.UpdatePost(edit(CONTENT), metadata=as_bob),
        "stale etag": posts.UpdatePost(edit(CONTENT, etag="1-0000"), metadata=as_alice),
        "bidi name": users.UpdateUser(rename, metadata=as_alice),
        "not found": posts.GetPost(
            posts_pb.GetPostRequest(id=str(uuid.uuid4())), metadata=as_alice
        ),
        "forged token": posts.CreatePost(
            posts_pb.CreatePostRequest(content=CONTENT),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        ),
        "bad scheme": posts.CreatePost(
            posts_pb.CreatePostRequest(content=CONTENT),
            metadata=(("authorization", f"Basic {TOKEN}"),),
        ),
        "wrong password": auth.Login(auth_pb.LoginRequest(email=alice.email, password=PASSWORD)),
        "unknown email": auth.Login(
            auth_pb.LoginRequest(email="nobody-canary@example.com", password=PASSWORD)
        ),
        "weak password": auth.Register(
            auth_pb.RegisterRequest(email="new-canary@example.com", password="canary")
        ),
        "unknown mail link": auth.ResetPassword(
            auth_pb.ResetPasswordRequest(token=LINK_TOKEN, new_password=PASSWORD)
        ),
        "mail link on the wrong path": auth.ConfirmEmailChange(
            auth_pb.ConfirmEmailChangeRequest(token=LINK_TOKEN)
        ),
        "wrong password for an email change": auth.RequestEmailChange(
            auth_pb.RequestEmailChangeRequest(
                new_email="moved-canary@example.com", current_password=PASSWORD
            ),
            metadata=as_alice,
        ),
        "spent refresh token": auth.Refresh(auth_pb.RefreshRequest(refresh_token=TOKEN)),
        "wrong current password": auth.ChangePassword(
            auth_pb.ChangePasswordRequest(current_password=PASSWORD, new_password=PASSWORD + "!"),
            metadata=as_alice,
        ),
        "undecodable body": channel.unary_unary(
            "/nuell.posts.v1.PostService/CreatePost",
            request_serializer=lambda body: body,
        )(b"\x0a\xff\xff\xff\xff\x0f" + CONTENT.encode(), metadata=as_alice),
    }
    codes = {name: await _fails(call) for name, call in refusals.items()}
    assert grpc.StatusCode.INTERNAL not in codes.values(), codes
    # Answered OK on purpose (no enumeration), and no trace of the address either.
    await auth.Register(auth_pb.RegisterRequest(email=alice.email, password=PASSWORD))
    await auth.RequestPasswordReset(
        auth_pb.RequestPasswordResetRequest(email="nobody-canary@example.com")
    )
    _assert_clean(gateway_log, "rejected access token")


class _Broken(post_service_pb2_grpc.PostServiceServicer):
    """A servicer with a bug whose exception quotes the request."""

    async def CreatePost(
        self, request: posts_pb.CreatePostRequest, context: grpc.aio.ServicerContext
    ) -> posts_pb.CreatePostResponse:
        try:
            raise KeyError(request.content)
        except KeyError as exc:
            raise ValueError(f"cannot store {request.content!r}") from exc


@pytest.fixture
async def broken_server(resources: Resources) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    CallBoundary(resources).mount(
        server,
        post_service_pb2_grpc.add_PostServiceServicer_to_server,
        _Broken(),  # type: ignore[abstract]  # the other RPCs answer UNIMPLEMENTED
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def test_a_bug_is_logged_by_its_stack_not_by_what_it_quotes(
    broken_server: grpc.aio.Channel, resources: Resources, gateway_log: io.StringIO
) -> None:
    me = bearer(resources.access_tokens, await make_user(resources.sessions))
    code = await _fails(
        PostServiceStub(broken_server).CreatePost(
            posts_pb.CreatePostRequest(content=CONTENT), metadata=me
        )
    )
    assert code == grpc.StatusCode.INTERNAL
    _assert_clean(gateway_log, "unexpected error")
    text = gateway_log.getvalue()
    assert "builtins.KeyError" in text
    assert "builtins.ValueError" in text
    assert "in CreatePost" in text  # the frame that raised


@pytest.fixture
async def stricter_database(database_server: URL) -> AsyncIterator[Gateway]:
    """A gateway whose database refuses what validation lets through: a CHECK
    the contract does not state, and a stricter copy of one it does."""
    with throwaway_database(database_server) as url:
        url = url.set(drivername="postgresql+psycopg")
        upgrade_to_head(url)
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute(
                "ALTER TABLE posts ADD CONSTRAINT ck_posts_test_extra CHECK (content !~ 'canary')"
            )
            conn.execute(
                "ALTER TABLE users DROP CONSTRAINT ck_users_display_name_plain, "
                "ADD CONSTRAINT ck_users_display_name_plain CHECK (display_name !~ 'canary')"
            )
        gateway = await Gateway.start(make_settings(url))
        try:
            yield gateway
        finally:
            await gateway.stop()


async def test_a_constraint_that_slips_through_is_a_clear_status_and_logs_no_row(
    stricter_database: Gateway, gateway_log: io.StringIO
) -> None:
    resources = stricter_database.resources
    alice = await make_user(resources.sessions)
    me = bearer(resources.access_tokens, alice)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stricter_database.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await PostServiceStub(channel).CreatePost(
                posts_pb.CreatePostRequest(content=CONTENT), metadata=me
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CONSTRAINT_VIOLATED" in str(caught.value.trailing_metadata())

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await UserServiceStub(channel).UpdateUser(
                users_pb.UpdateUserRequest(
                    user=user_pb2.User(id=str(alice.id), display_name=NAME),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
                metadata=me,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_clean(gateway_log, "the database refused a write that passed validation")
    assert "ck_posts_test_extra" in gateway_log.getvalue()


async def test_an_unreachable_compute_service_logs_no_content(
    database_url: URL, empty_tables: None, gateway_log: io.StringIO
) -> None:
    gateway = await Gateway.start(make_settings(database_url, compute_target="127.0.0.1:9"))
    try:
        resources = gateway.resources
        me = bearer(resources.access_tokens, await make_user(resources.sessions))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            reply = await PostServiceStub(channel).CreatePost(
                posts_pb.CreatePostRequest(content=CONTENT), metadata=me
            )
        assert reply.post.analysis.state == post_pb2.ANALYSIS_STATE_PENDING
    finally:
        await gateway.stop()
    _assert_clean(gateway_log, "analysis deferred")


def test_the_formatter_drops_every_message_of_a_chain() -> None:
    record = logging.makeLogRecord({"msg": "backfill failed", "levelno": logging.ERROR})
    try:
        try:
            raise RuntimeError(f"content {CONTENT}")
        except RuntimeError:
            raise ExceptionGroup(f"group {TOKEN}", [ValueError(PASSWORD)]) from None
    except ExceptionGroup as exc:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    text = JsonFormatter().format(record)
    assert "builtins.ExceptionGroup [builtins.ValueError]" in text
    assert "RuntimeError" not in text  # suppressed context, as Python itself prints it
    for canary in CANARIES:
        assert canary not in text
    assert STRONG_PASSWORD not in text
