"""The assembled gateway: health, reflection, the call boundary, shutdown."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from nuell.users.v1 import user_pb2, user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceServicer, UserServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.boundary import CallBoundary
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from nuell_gateway.services import SERVICES
from nuell_gateway.services.users import UserService
from tests.conftest import make_settings
from tests.utils.factories import bearer, make_user
from tests.utils.rpc import contract_methods, error_details, method_path
from tests.utils.samples import VALID_REQUESTS

NUELL_SERVICES = {entry.name for entry in SERVICES}


async def test_health_is_serving_overall_and_per_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ["", *NUELL_SERVICES]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_health_of_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="nuell.nope.v1.Nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_every_service(channel: grpc.aio.Channel, version: str) -> None:
    # v1 and v1alpha are the same messages on the wire.
    info = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = [reply async for reply in info(iter([request]))]
    listed = {service.name for service in replies[0].list_services_response.service}
    assert listed == NUELL_SERVICES | {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_reflection_describes_contract_files(channel: grpc.aio.Channel) -> None:
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="nuell.posts.v1.PostService"
    )
    replies = [reply async for reply in info(iter([request]))]
    files = replies[0].file_descriptor_response.file_descriptor_proto
    assert files, replies[0]


def test_every_contract_rpc_has_a_sample_request() -> None:
    assert {method_path(m).lstrip("/") for m in contract_methods()} == set(VALID_REQUESTS)


async def test_a_contract_rpc_without_an_implementation_answers_unimplemented(
    database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a servicer inherits from the generated base for an RPC added to
    # the contract but not implemented yet.
    monkeypatch.setattr(UserService, "GetCurrentUser", UserServiceServicer.GetCurrentUser)
    gateway = await Gateway.start(make_settings(database_url))
    try:
        user = await make_user(gateway.resources.sessions)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await UserServiceStub(channel).GetCurrentUser(
                    user_service_pb2.GetCurrentUserRequest(),
                    metadata=bearer(gateway.resources.access_tokens, user),
                )
    finally:
        await gateway.stop()
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNIMPLEMENTED
    assert details.error_info is not None
    assert details.error_info.reason == "NOT_IMPLEMENTED"
    assert "nuell.users.v1.UserService/GetCurrentUser" in details.message


async def test_invalid_request_lists_every_violation(
    channel: grpc.aio.Channel,
) -> None:
    auth = auth_service_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Register(auth_service_pb2.RegisterRequest(email="nope", password="short"))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.error_info is not None
    assert details.error_info.reason == "INVALID_FIELDS"
    assert {(v.field, v.reason) for v in details.violations} == {
        ("email", "string.email"),
        ("password", "string.min_len"),
        ("password", "password.uppercase"),
        ("password", "password.digit"),
        ("password", "password.symbol"),
    }


async def test_violation_paths_name_nested_fields(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    user = await make_user(gateway.resources.sessions)
    update = channel.unary_unary(
        "/nuell.users.v1.UserService/UpdateUser",
        request_serializer=user_service_pb2.UpdateUserRequest.SerializeToString,
    )
    request = user_service_pb2.UpdateUserRequest(user=user_pb2.User(id="not-a-uuid"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(request, metadata=bearer(gateway.resources.access_tokens, user))
    details = error_details(caught.value)
    assert {(v.field, v.reason) for v in details.violations} == {
        ("user.id", "string.uuid"),
        ("update_mask", "required"),
    }


@pytest.mark.usefixtures("empty_tables")
async def test_shutdown_goes_not_serving_then_drains_in_flight_calls(
    database_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def slow_get_current_user(
        self: UserService, request: object, context: grpc.aio.ServicerContext
    ) -> user_service_pb2.GetCurrentUserResponse:
        started.set()
        await asyncio.sleep(0.5)
        return user_service_pb2.GetCurrentUserResponse(user=user_pb2.User(email="a@b.co"))

    monkeypatch.setattr(UserService, "GetCurrentUser", slow_get_current_user)
    gateway = await Gateway.start(make_settings(database_url, shutdown_grace_seconds=5))
    me = bearer(gateway.resources.access_tokens, await make_user(gateway.resources.sessions))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        get_me = channel.unary_unary(
            "/nuell.users.v1.UserService/GetCurrentUser",
            request_serializer=user_service_pb2.GetCurrentUserRequest.SerializeToString,
            response_deserializer=user_service_pb2.GetCurrentUserResponse.FromString,
        )
        in_flight = asyncio.ensure_future(
            get_me(user_service_pb2.GetCurrentUserRequest(), metadata=me)
        )
        await started.wait()

        stopping = asyncio.ensure_future(gateway.stop())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = await in_flight
        assert reply.user.email == "a@b.co"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get_me(user_service_pb2.GetCurrentUserRequest(), metadata=me, timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        watch.cancel()
        await stopping


async def test_an_undecodable_body_is_invalid_argument_after_authentication(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    raw = channel.unary_unary("/nuell.posts.v1.PostService/GetPost")
    garbage = b"\xff\xff\xff\xff\x0f"
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await raw(garbage)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    user = await make_user(gateway.resources.sessions)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(garbage, metadata=bearer(gateway.resources.access_tokens, user))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.error_info is not None
    assert details.error_info.reason == "MALFORMED_REQUEST"


async def test_error_details_stay_small_whatever_the_request(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    from google.protobuf import field_mask_pb2

    user = await make_user(gateway.resources.sessions)
    update = channel.unary_unary(
        "/nuell.users.v1.UserService/UpdateUser",
        request_serializer=user_service_pb2.UpdateUserRequest.SerializeToString,
    )
    request = user_service_pb2.UpdateUserRequest(
        user=user_pb2.User(id=str(user.id)),
        update_mask=field_mask_pb2.FieldMask(paths=[f"nope_{n}_" + "x" * 500 for n in range(200)]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(request, metadata=bearer(gateway.resources.access_tokens, user))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(details.violations) == 26  # 25 shown, then "and 175 more"
    assert details.violations[-1].description == "and 175 more"
    assert all(len(v.description) <= 200 for v in details.violations)


def test_a_service_registered_only_generically_is_refused_at_start(
    resources: Resources,
) -> None:
    """The boundary wraps what generated code registers as method handlers; a
    registration it never sees would serve calls with no authentication."""

    def add_generically(servicer: object, server: object) -> None:
        handler = grpc.method_handlers_generic_handler("nuell.x.v1.X", {})
        server.add_generic_rpc_handlers((handler,))  # type: ignore[attr-defined]

    server = grpc.aio.server()
    with pytest.raises(RuntimeError, match="add_generically registered no method handlers"):
        CallBoundary(resources).mount(server, add_generically, object())
