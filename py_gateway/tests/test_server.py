"""The assembled gateway: health, reflection, shutdown."""

from __future__ import annotations

import asyncio

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from nuell.users.v1 import user_pb2, user_service_pb2
from sqlalchemy.engine import URL

from nuell_gateway.cancellation import reraise_if_cancelled
from nuell_gateway.server import Gateway
from nuell_gateway.services import SERVICES
from nuell_gateway.services.users import UserService
from tests.conftest import make_settings
from tests.utils.factories import bearer, make_user

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


async def test_a_loop_cancelled_mid_query_stops_even_if_the_driver_raises_its_own_error() -> None:
    """What psycopg may do with a cancellation that lands in a query, and what
    every background loop of the gateway does about it (cancellation.py)."""

    async def background_loop() -> None:
        while True:
            try:
                try:
                    await asyncio.sleep(10)  # a query
                except asyncio.CancelledError:
                    raise psycopg.errors.QueryCanceled("canceling statement") from None
            except psycopg.Error:
                reraise_if_cancelled()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(background_loop())
    await asyncio.sleep(0.01)
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_gateway_stopped_right_after_it_started_stops_promptly(
    database_url: URL, empty_tables: None
) -> None:
    """Its background loops are in their first queries: each must still stop."""
    for _ in range(5):
        gateway = await Gateway.start(make_settings(database_url))
        async with asyncio.timeout(10):
            await gateway.stop()
