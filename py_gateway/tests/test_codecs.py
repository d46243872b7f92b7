"""The two encodings a call's messages may use (codecs.py): protobuf, and
JSON for Connect's JSON calls, which the edge marks in x-nuell-content-type."""

from __future__ import annotations

import json

import grpc
import pytest
from nuell.auth.v1 import auth_service_pb2
from nuell.posts.v1 import post_service_pb2, post_service_pb2_grpc

from nuell_gateway import codecs
from nuell_gateway.codecs import UNDECODABLE, Body, Codec, codec_for
from nuell_gateway.resources import Resources
from nuell_gateway.services import SERVICES
from tests.utils.factories import TestUser, bearer
from tests.utils.rpc import error_details

JAPANESE = "鵺の声を聞いた夜、京都は雪だった"
JSON_CALL = (codecs.CONTENT_TYPE_HEADER, codecs.JSON_CONTENT_TYPE)


@pytest.mark.parametrize(
    ("metadata", "json_expected"),
    [
        ((), False),
        (((codecs.CONTENT_TYPE_HEADER, "application/grpc"),), False),
        (((codecs.CONTENT_TYPE_HEADER, "application/grpc+proto"),), False),
        ((JSON_CALL,), True),
        (((codecs.CONTENT_TYPE_HEADER, "Application/GRPC+JSON; charset=utf-8"),), True),
        (((codecs.CONTENT_TYPE_HEADER, "application/json"),), False),  # not what the edge sends
    ],
)
def test_the_edge_header_chooses_the_codec(
    metadata: tuple[tuple[str, str], ...], json_expected: bool
) -> None:
    assert codec_for(metadata, auth_service_pb2.LoginRequest).json is json_expected


def test_json_keeps_japanese_and_uses_protos_json_names() -> None:
    codec = Codec(post_service_pb2.CreatePostRequest, json=True)
    body = json.dumps({"content": JAPANESE}, ensure_ascii=False).encode()

    assert codec.decode(Body(body)) == post_service_pb2.CreatePostRequest(content=JAPANESE)
    reply = codec.encode(post_service_pb2.ListPostsRequest(page_size=5, author_id="x"))
    assert reply == b'{"pageSize":5,"authorId":"x"}'
    encoded = codec.encode(post_service_pb2.CreatePostRequest(content=JAPANESE))
    assert isinstance(encoded, bytes)
    assert JAPANESE.encode() in encoded


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"email": 5}', b'{"nope": 1}', b"\xff\xfe{}", b"[]", b'"text"'],
    ids=["truncated", "wrong-type", "unknown-field", "not-utf8", "array", "string"],
)
def test_json_that_is_not_the_message_is_undecodable(body: bytes) -> None:
    assert Codec(auth_service_pb2.LoginRequest, json=True).decode(Body(body)) is UNDECODABLE


def test_protobuf_is_decoded_and_replies_pass_through() -> None:
    codec = Codec(auth_service_pb2.LoginRequest)
    request = auth_service_pb2.LoginRequest(email="a@example.jp", password="パスワード")

    assert codec.decode(Body(request.SerializeToString())) == request
    assert codec.decode(Body(b"\xff\xff\xff")) is UNDECODABLE
    assert codec.encode(request) is request
    assert codecs.send(request) == request.SerializeToString()
    assert codecs.send(b"{}") == b"{}"


def test_generated_stubs_hand_the_boundary_a_bound_from_string() -> None:
    # boundary.py reads each method's request type from the generated
    # handler's deserializer, `RequestType.FromString`.
    found: list[object] = []

    class Recorder:
        def add_generic_rpc_handlers(self, handlers: tuple[object, ...]) -> None:
            found.extend(handlers)

        def add_registered_method_handlers(self, service: str, methods: dict[str, object]) -> None:
            found.extend(methods.values())

    class AnyServicer:
        def __getattr__(self, name: str) -> object:
            return print  # any callable: only the deserializers are looked at

    for entry in SERVICES:
        entry.add_to_server(AnyServicer(), Recorder())
    handlers = [h for h in found if isinstance(h, grpc.RpcMethodHandler)]
    assert handlers
    for handler in handlers:
        request_type = handler.request_deserializer.__self__
        assert handler.request_deserializer == request_type.FromString


async def test_a_json_call_through_the_gateway(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser
) -> None:
    create = channel.unary_unary("/nuell.posts.v1.PostService/CreatePost")
    metadata = (*bearer(resources.access_tokens, alice), JSON_CALL)

    reply = await create(json.dumps({"content": JAPANESE}).encode(), metadata=metadata)

    post = json.loads(reply)["post"]
    assert post["content"] == JAPANESE
    read = post_service_pb2_grpc.PostServiceStub(channel).GetPost
    request = post_service_pb2.GetPostRequest(id=post["id"])
    stored = await read(request, metadata=bearer(resources.access_tokens, alice))
    assert stored.post.content == JAPANESE


async def test_a_json_call_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, resources: Resources, alice: TestUser
) -> None:
    create = channel.unary_unary("/nuell.posts.v1.PostService/CreatePost")
    metadata = (*bearer(resources.access_tokens, alice), JSON_CALL)

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(b'{"content": ', metadata=metadata)

    details = error_details(failure.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.error_info is not None
    assert details.error_info.reason == "MALFORMED_REQUEST"


async def test_health_checks_take_json_too(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")

    assert json.loads(await check(b"{}", metadata=(JSON_CALL,))) == {"status": "SERVING"}
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await check(b"{", metadata=(JSON_CALL,))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
