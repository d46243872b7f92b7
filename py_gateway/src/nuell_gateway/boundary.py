"""The call boundary every Nuell RPC passes through.

Each contract method's handler is wrapped once, when it is mounted, so that
in one place and for every RPC, in this order: the call's ids are read (or
made); the access token is verified and the caller loaded (into a
ContextVar); the RPC's required scope from `authz.POLICIES` is checked; the
request (each message, for streams) is validated against the proto's rules;
then the servicer runs. This is the one place where errors become gRPC
statuses: a `DomainError` becomes its code with `google.rpc` details
(ErrorInfo, BadRequest); an unreachable database is UNAVAILABLE; a write
the database refuses is a precise status (`db.integrity`); a contract RPC
with no implementation yet is UNIMPLEMENTED; anything else is logged with
its stack and answered INTERNAL without detail. Health and reflection are
mounted directly.

Wrapping at mount time rather than through a grpc.aio `ServerInterceptor`
keeps grpc on its direct path: with an interceptor, every call first runs
an extra coroutine that looks the handler up and builds new wrappers.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import psycopg_pool
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from nuell_gateway import clients, codecs, request_id, tracing
from nuell_gateway.authz import POLICIES, authenticate, bearer_token, set_caller
from nuell_gateway.codecs import Body, Codec
from nuell_gateway.db import integrity
from nuell_gateway.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    RelayedStatus,
    Unavailable,
    Unimplemented,
)
from nuell_gateway.metrics import RPC_DURATION, RPC_REQUESTS
from nuell_gateway.resources import Resources
from nuell_gateway.validation import validate_request

logger = logging.getLogger(__name__)

# Failures of the database connection (not of a query): retryable.
_DATABASE_DOWN = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
)


# The ErrorInfo domain: which system produced the error.
ERROR_DOMAIN = "nuell.dev"
# Details travel in a trailer, and clients refuse trailers beyond 8-16 KiB:
# a reply lists at most this many violations, each description cut short.
MAX_VIOLATIONS = 25
MAX_DESCRIPTION_CHARS = 200
# What a caller sees for a bug: nothing about its cause.
INTERNAL_ERROR = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def rpc_status_of(error: DomainError) -> status_pb2.Status:
    """The `google.rpc.Status` a domain error is answered with, details included."""
    if isinstance(error, RelayedStatus):
        return error.status
    details: list[Message] = [
        error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
        )
    ]
    if error.violations:
        shown = error.violations[:MAX_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field[:MAX_DESCRIPTION_CHARS],
                description=_shorten(v.description),
                reason=v.reason,
            )
            for v in shown
        ]
        if len(error.violations) > len(shown):
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    description=f"and {len(error.violations) - len(shown)} more",
                    reason="more_violations",
                )
            )
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(error.retry_after_seconds, 0) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=error.code, message=error.message, details=packed)


def _shorten(text: str) -> str:
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text
    return text[: MAX_DESCRIPTION_CHARS - 1] + "…"


def _status_for(exc: BaseException, method: str) -> status_pb2.Status:
    if isinstance(exc, NotImplementedError):
        exc = Unimplemented(f"{method.lstrip('/')} is not implemented yet")
    elif isinstance(exc, _DATABASE_DOWN):
        logger.warning("database unavailable in %s: %s", method, type(exc).__name__)
        exc = Unavailable("the database is unavailable; retry later", reason="DATABASE_UNAVAILABLE")
    elif isinstance(exc, integrity.REFUSED_WRITE):
        exc = integrity.refused_write(exc, method)
    if isinstance(exc, DomainError):
        return rpc_status_of(exc)
    logger.error("unexpected error in %s", method, exc_info=exc, extra={"method": method})
    return INTERNAL_ERROR


@dataclass(frozen=True)
class _Answer(grpc.Status):  # type: ignore[misc]
    """A status to abort with, carrying the call's ids beside its details."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


class _Observer:
    """A method's metrics, with its label children looked up once."""

    def __init__(self, method: str) -> None:
        self._method = method
        self._ok = RPC_REQUESTS.labels(method=method, code=grpc.StatusCode.OK.name)
        self._duration = RPC_DURATION.labels(method=method)

    def succeeded(self, started: float, context: grpc.aio.ServicerContext) -> None:
        context.set_trailing_metadata(request_id.current().outgoing_metadata())
        self._ok.inc()
        self._duration.observe(time.perf_counter() - started)
        if tracing.enabled:
            tracing.record_server_span(self._method, grpc.StatusCode.OK, started)

    async def abort(
        self, exc: Exception, context: grpc.aio.ServicerContext, started: float
    ) -> None:
        """Answer the call with the status `exc` stands for (always raises)."""
        status = rpc_status.to_status(_status_for(exc, self._method))
        RPC_REQUESTS.labels(method=self._method, code=status.code.name).inc()
        self._duration.observe(time.perf_counter() - started)
        if tracing.enabled:
            tracing.record_server_span(self._method, status.code, started)
        await context.abort_with_status(
            _Answer(
                code=status.code,
                details=status.details,
                trailing_metadata=(
                    *status.trailing_metadata,
                    *request_id.current().outgoing_metadata(),
                ),
            )
        )


async def _validated(requests: AsyncIterator[Body], codec: Codec) -> AsyncIterator[Message]:
    """The stream's messages, each decoded and validated; the first bad one ends it, named."""
    index = 0
    async for body in requests:
        request = codec.decode(body)
        try:
            message = validate_request(request)
        except InvalidArgument as exc:
            exc.metadata["message_index"] = str(index)
            if request_id := getattr(request, "id", ""):
                exc.metadata["id"] = str(request_id)[:128]
            raise
        yield message
        index += 1


async def _resolve(result: Any) -> Any:
    """A handler may return a value, an awaitable or an async iterator."""
    return await result if inspect.isawaitable(result) else result


Admit = Callable[[Any], Awaitable[None]]


class CallBoundary:
    """Authenticates, authorizes, validates and translates errors for every Nuell RPC."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    def mount(
        self, server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None], servicer: Any
    ) -> None:
        """`add_to_server(servicer, server)` (a generated `add_…_to_server`), every
        method wrapped in the boundary."""
        wrapping = _WrappingServer(server, self)
        add_to_server(servicer, wrapping)
        if not wrapping.registered:
            raise RuntimeError(f"{add_to_server.__name__} registered no method handlers")

    def _admission(self, method: str) -> Admit:
        """What a call of `method` must pass before its handler runs; sets the caller."""
        policy = POLICIES.get(method)
        resources = self._resources

        async def refuse(metadata: Any) -> None:  # deny by default: an RPC nobody classified
            raise PermissionDenied("this call is not allowed", reason="NO_POLICY")

        async def public(metadata: Any) -> None:
            set_caller(None)

        if policy is None:
            return refuse
        scope = policy.scope
        if scope is None:
            return public

        async def signed_in(metadata: Any) -> None:
            caller = await authenticate(resources, bearer_token(metadata))
            set_caller(caller)
            caller.require(scope)

        return signed_in

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` (`/package.Service/Method`) inside the boundary."""
        # grpcio hands over bytes; the codec, chosen per call, decodes them.
        serializers = {"request_deserializer": codecs.receive, "response_serializer": codecs.send}
        # Generated stubs pass `RequestType.FromString`, a bound classmethod.
        request_type: type[Message] = handler.request_deserializer.__self__
        admit = self._admission(method)
        observer = _Observer(method)
        trusted = self._resources.settings.trusted_proxy_networks

        def identify(context: grpc.aio.ServicerContext) -> tuple[Any, Codec]:
            metadata = context.invocation_metadata()
            request_id.identify(metadata)
            clients.identify(metadata, context.peer(), trusted)
            return metadata, codecs.codec_for(metadata, request_type)

        if handler.unary_unary:
            inner_uu: Callable[..., Awaitable[Message]] = handler.unary_unary

            async def unary_unary(body: Body, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                metadata, codec = identify(context)
                try:
                    await admit(metadata)
                    request = validate_request(codec.decode(body))
                    response: Message = await _resolve(inner_uu(request, context))
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await observer.abort(exc, context, started)
                    raise  # unreachable: abort raises
                observer.succeeded(started, context)
                return codec.encode(response)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)

        if handler.stream_unary:
            inner_su: Callable[..., Awaitable[Message]] = handler.stream_unary

            async def stream_unary(
                requests: AsyncIterator[Body], context: grpc.aio.ServicerContext
            ) -> Any:
                started = time.perf_counter()
                metadata, codec = identify(context)
                try:
                    await admit(metadata)
                    response: Message = await _resolve(
                        inner_su(_validated(requests, codec), context)
                    )
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await observer.abort(exc, context, started)
                    raise
                observer.succeeded(started, context)
                return codec.encode(response)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)

        def streaming(
            call: Callable[[Any, Codec, grpc.aio.ServicerContext], Any],
        ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
            # grpc.aio picks the streaming mode by asking whether the handler
            # is an async generator function, so the wrapper must be one.
            async def handler(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                metadata, codec = identify(context)
                try:
                    await admit(metadata)
                    async for response in await _resolve(call(request, codec, context)):
                        yield codec.encode(response)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await observer.abort(exc, context, started)
                observer.succeeded(started, context)

            return handler

        if handler.unary_stream:
            inner_us = handler.unary_stream

            def unary_stream(body: Body, codec: Codec, context: grpc.aio.ServicerContext) -> Any:
                return inner_us(validate_request(codec.decode(body)), context)

            return grpc.unary_stream_rpc_method_handler(streaming(unary_stream), **serializers)

        inner_ss = handler.stream_stream

        def stream_stream(
            requests: AsyncIterator[Body], codec: Codec, context: grpc.aio.ServicerContext
        ) -> Any:
            return inner_ss(_validated(requests, codec), context)

        return grpc.stream_stream_rpc_method_handler(streaming(stream_stream), **serializers)


class _WrappingServer:
    """What a generated `add_…_to_server` is handed instead of the server: it
    registers the service's handlers on the real server, each wrapped once."""

    def __init__(self, server: grpc.aio.Server, boundary: CallBoundary) -> None:
        self._server = server
        self._boundary = boundary
        self.registered = False

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # The same methods arrive through add_registered_method_handlers,
        # which the generated code always calls too; they are wrapped there.
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {
            name: self._boundary.wrap(handler, f"/{service}/{name}")
            for name, handler in handlers.items()
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),)
        )
        self._server.add_registered_method_handlers(service, wrapped)
        self.registered = True
