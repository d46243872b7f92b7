"""The call boundary (boundary.py): what every RPC passes, and the one
translation of errors into gRPC status with details."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from nuell.users.v1 import user_pb2, user_service_pb2
from nuell.users.v1.user_service_pb2_grpc import UserServiceServicer, UserServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.boundary import CallBoundary
from nuell_gateway.resources import Resources
from nuell_gateway.server import Gateway
from nuell_gateway.services import SERVICES, ServiceEntry
from nuell_gateway.services.users import UserService
from tests.conftest import make_settings
from tests.utils.factories import bearer, make_user
from tests.utils.rpc import contract_methods, error_details, method_path
from tests.utils.samples import VALID_REQUESTS


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


class _RecordingServer:
    """Stands where a grpc.aio server would, writing down what is registered on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        self.calls.append(("add_generic_rpc_handlers", (handlers,)))

    def add_registered_method_handlers(self, service: object, handlers: object) -> None:
        self.calls.append(("add_registered_method_handlers", (service, handlers)))


class _AnyServicer:
    """Has every method a generated registration looks up."""

    def __getattr__(self, name: str) -> Any:
        return lambda request, context: None


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc]
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_generated_registration_is_what_the_boundary_wraps(entry: ServiceEntry) -> None:
    """grpcio's generated `add_…Servicer_to_server` registers every method twice:
    once as a dict of handlers through `add_registered_method_handlers` (which
    the boundary wraps) and once as a generic handler (which it drops). A
    grpcio whose generated code registers otherwise fails here, before a
    method could be served unwrapped or not at all."""
    server = _RecordingServer()
    entry.add_to_server(_AnyServicer(), server)

    assert [name for name, _ in server.calls] == [
        "add_generic_rpc_handlers",
        "add_registered_method_handlers",
    ]
    (generic_handlers,) = server.calls[0][1]
    service, handlers = server.calls[1][1]
    assert service == entry.name
    assert isinstance(handlers, dict)
    methods = descriptor_pool.Default().FindServiceByName(entry.name).methods
    assert set(handlers) == {method.name for method in methods}
    for method in methods:
        handler = handlers[method.name]
        assert isinstance(handler, grpc.RpcMethodHandler)
        assert (handler.request_streaming, handler.response_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )
        # The generic handler serves exactly these handlers, so dropping it loses nothing.
        (generic,) = generic_handlers
        path = f"/{entry.name}/{method.name}"
        assert generic.service(_CallDetails(method=path)) is handler


def test_mounting_wraps_every_method_in_the_boundary(resources: Resources) -> None:
    """What reaches the real server are the boundary's wrappers, never the servicer's methods."""
    server = _RecordingServer()
    entry = next(e for e in SERVICES if e.name == "nuell.users.v1.UserService")
    servicer = entry.build(resources)
    CallBoundary(resources).mount(server, entry.add_to_server, servicer)

    assert [name for name, _ in server.calls] == [
        "add_generic_rpc_handlers",
        "add_registered_method_handlers",
    ]
    service, handlers = server.calls[1][1]
    assert service == entry.name
    assert isinstance(handlers, dict)
    for name, handler in handlers.items():
        behaviour = handler.unary_unary or handler.unary_stream
        assert behaviour.__module__ == "nuell_gateway.boundary", name
        assert behaviour is not getattr(servicer, name)
