"""Etags are keyed: only the server can make one, and they survive a key rotation.

An etag used to be `<version>-<unkeyed blake2b(id:version)>`, which anyone
could compute. The check is now a keyed MAC under a key derived from the
token signing keys: one computed without the key is stale (ABORTED,
nothing changes), one under the previous signing key still holds.
"""

from __future__ import annotations

import hashlib
import re

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nuell.posts.v1 import post_pb2
from nuell.posts.v1 import post_service_pb2 as posts_pb
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub
from nuell.users.v1 import user_pb2
from nuell.users.v1 import user_service_pb2 as users_pb
from nuell.users.v1.user_service_pb2_grpc import UserServiceStub

from nuell_gateway.pagination import derived_keys
from nuell_gateway.resources import Resources
from tests.conftest import TEST_JWT_KEYS
from tests.utils.factories import TestUser, bearer
from tests.utils.rpc import error_details
from tests.utils.snapshot import snapshot


def _mac(key: bytes | None, resource_id: str, version: int, size: int) -> str:
    message = f"{resource_id}:{version}".encode()
    return hashlib.blake2b(message, key=key or b"", digest_size=size).hexdigest()


def _signing_key(position: int) -> bytes:
    return TEST_JWT_KEYS.split(",")[position].partition(":")[2].encode()


def forged_etags(resource_id: str, version: int) -> dict[str, str]:
    """Etags for this version that a client could compute without the server's key."""
    signing_key = _signing_key(0)
    (page_token_key,) = derived_keys([signing_key], "page token")
    return {
        "unkeyed, as before": f"{version}-{_mac(None, resource_id, version, 6)}",
        "unkeyed, new length": f"{version}-{_mac(None, resource_id, version, 8)}",
        "under the raw signing key": f"{version}-{_mac(signing_key, resource_id, version, 8)}",
        "under the page-token key": f"{version}-{_mac(page_token_key, resource_id, version, 8)}",
    }


async def _post(channel: grpc.aio.Channel, resources: Resources, author: TestUser) -> post_pb2.Post:
    reply: posts_pb.CreatePostResponse = await PostServiceStub(channel).CreatePost(
        posts_pb.CreatePostRequest(content="etag の試験"),
        metadata=bearer(resources.access_tokens, author),
    )
    return reply.post


async def test_an_etag_is_version_and_a_keyed_check(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser
) -> None:
    post = await _post(channel, resources, alice)
    assert re.fullmatch(r"1-[0-9a-f]{16}", post.etag)
    assert post.etag not in forged_etags(post.id, 1).values()


@pytest.mark.parametrize("forgery", list(forged_etags("x", 1)))
async def test_an_etag_computed_without_the_key_is_stale(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser, forgery: str
) -> None:
    posts, users = PostServiceStub(channel), UserServiceStub(channel)
    me = bearer(resources.access_tokens, alice)
    post = await _post(channel, resources, alice)
    before = await snapshot(resources.sessions)

    calls = [
        posts.UpdatePost(
            posts_pb.UpdatePostRequest(
                post=post_pb2.Post(
                    id=post.id, content="上書き", etag=forged_etags(post.id, 1)[forgery]
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=me,
        ),
        posts.DeletePost(
            posts_pb.DeletePostRequest(id=post.id, etag=forged_etags(post.id, 1)[forgery]),
            metadata=me,
        ),
        users.UpdateUser(
            users_pb.UpdateUserRequest(
                user=user_pb2.User(
                    id=str(alice.id),
                    display_name="上書き",
                    etag=forged_etags(str(alice.id), 1)[forgery],
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=me,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        details = error_details(caught.value)
        assert details.code == grpc.StatusCode.ABORTED
        assert details.error_info is not None
        assert details.error_info.reason == "ETAG_MISMATCH"
    assert await snapshot(resources.sessions) == before


async def test_an_etag_made_under_the_previous_signing_key_still_holds(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser
) -> None:
    """After a rotation the old key is second in NUELL_JWT_KEYS: its etags still match."""
    post = await _post(channel, resources, alice)
    (previous,) = derived_keys([_signing_key(1)], "etag")
    etag = f"1-{_mac(previous, post.id, 1, 8)}"
    assert etag != post.etag
    reply = await PostServiceStub(channel).DeletePost(
        posts_pb.DeletePostRequest(id=post.id, etag=etag),
        metadata=bearer(resources.access_tokens, alice),
    )
    assert reply == posts_pb.DeletePostResponse()
    assert (await snapshot(resources.sessions))["posts"] == []
