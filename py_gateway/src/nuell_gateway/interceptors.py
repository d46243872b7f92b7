"""The call boundary every Nuell RPC passes through.

One interceptor wraps each handler so that, in one place and for every RPC,
in this order: the access token is verified and the caller loaded (once per
call, into a ContextVar); the RPC's required scope from `authz.POLICIES` is
checked; the request (each message, for streams) is validated against the
proto's rules; then the servicer runs. `DomainError`s become statuses with
details; an unreachable database is UNAVAILABLE; a contract RPC with no
implementation yet is UNIMPLEMENTED; anything else is logged with its stack
and answered INTERNAL without detail. Health and reflection pass through.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import psycopg_pool
from google.protobuf.message import Message
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

from nuell_gateway import request_id
from nuell_gateway.authz import POLICIES, ROLE_SCOPES, Caller, Role, set_caller
from nuell_gateway.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    internal_error_status,
)
from nuell_gateway.metrics import RPC_DURATION, RPC_REQUESTS
from nuell_gateway.resources import Resources
from nuell_gateway.security.tokens import InvalidTokenError
from nuell_gateway.validation import tolerant, validate_request

logger = logging.getLogger(__name__)

# Only the contract's services get the boundary; health and reflection are
# grpc's own.
_NUELL_PREFIX = "/nuell."

# Failures of the database connection (not of a query): retryable.
_DATABASE_DOWN = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
)


def _status_for(exc: BaseException, method: str) -> Any:
    if isinstance(exc, NotImplementedError):
        exc = Unimplemented(f"{method.lstrip('/')} is not implemented yet")
    elif isinstance(exc, _DATABASE_DOWN):
        logger.warning("database unavailable in %s: %s", method, type(exc).__name__)
        exc = Unavailable("the database is unavailable; retry later", reason="DATABASE_UNAVAILABLE")
    if isinstance(exc, DomainError):
        return exc.to_rpc_status()
    logger.error("unexpected error in %s", method, exc_info=exc, extra={"method": method})
    return internal_error_status()


@dataclass(frozen=True)
class _Answer(grpc.Status):  # type: ignore[misc]
    """A status to abort with, carrying the call's ids beside its details."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


async def _abort_for(
    exc: Exception, method: str, context: grpc.aio.ServicerContext, started: float
) -> None:
    """Answer the call with the status `exc` stands for (always raises)."""
    status = rpc_status.to_status(_status_for(exc, method))
    _observe(method, status.code, started)
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


def _begin(context: grpc.aio.ServicerContext) -> float:
    """Per call, before anything else: who the call is (ids), and when it began."""
    request_id.identify(context.invocation_metadata())
    return time.perf_counter()


def _succeeded(method: str, started: float, context: grpc.aio.ServicerContext) -> None:
    context.set_trailing_metadata(request_id.current().outgoing_metadata())
    _observe(method, grpc.StatusCode.OK, started)


def _observe(method: str, code: grpc.StatusCode, started: float) -> None:
    RPC_REQUESTS.labels(method=method, code=code.name).inc()
    RPC_DURATION.labels(method=method).observe(time.perf_counter() - started)


async def _validated(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
    """The stream's messages, each validated; the first bad one ends it, named."""
    index = 0
    async for request in requests:
        try:
            validate_request(request)
        except InvalidArgument as exc:
            exc.metadata["message_index"] = str(index)
            if request_id := getattr(request, "id", ""):
                exc.metadata["id"] = str(request_id)[:128]
            raise
        yield request
        index += 1


async def _resolve(result: Any) -> Any:
    """A handler may return a value, an awaitable or an async iterator."""
    return await result if inspect.isawaitable(result) else result


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization header must be `Bearer <access token>`",
                    reason="INVALID_TOKEN",
                )
            return token.strip()
    raise Unauthenticated("this call needs an access token", reason="MISSING_TOKEN")


class CallBoundary(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates, authorizes, validates and translates errors for every Nuell RPC."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(_NUELL_PREFIX):
            return handler
        return self._wrap(handler, method)

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Authenticate and check the RPC's scope; sets the caller for this call."""
        policy = POLICIES.get(method)
        if policy is None:  # deny by default: an RPC nobody classified
            raise PermissionDenied("this call is not allowed", reason="NO_POLICY")
        if policy.scope is None:
            set_caller(None)
            return
        caller = await self._authenticate(_bearer_token(context))
        set_caller(caller)
        caller.require(policy.scope)

    async def _authenticate(self, token: str) -> Caller:
        try:
            claims = self._resources.access_tokens.verify(token)
        except InvalidTokenError as exc:
            logger.info("rejected access token", extra={"why": str(exc)})
            raise Unauthenticated(
                "the access token is invalid or expired", reason="INVALID_TOKEN"
            ) from None
        # The account's current state, not the token's: a deactivation or a
        # demotion takes effect on the next call (accounts.py).
        state = await self._resources.accounts.state(claims.user_id)
        if state is None or not state.is_active:
            raise Unauthenticated("the account is not active", reason="ACCOUNT_INACTIVE")
        role = Role(state.role)
        return Caller(
            user_id=uuid.UUID(str(claims.user_id)),
            role=role,
            scopes=claims.scopes & ROLE_SCOPES[role],
        )

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        admit = self._admit

        if handler.unary_unary:
            inner_uu: Callable[..., Awaitable[Message]] = handler.unary_unary

            async def unary_unary(request: Message, context: grpc.aio.ServicerContext) -> Message:
                started = _begin(context)
                try:
                    await admit(method, context)
                    validate_request(request)
                    response: Message = await _resolve(inner_uu(request, context))
                    _succeeded(method, started, context)
                    return response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort_for(exc, method, context, started)
                    raise  # unreachable: abort raises

            return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)

        if handler.stream_unary:
            inner_su: Callable[..., Awaitable[Message]] = handler.stream_unary

            async def stream_unary(
                requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
            ) -> Message:
                started = _begin(context)
                try:
                    await admit(method, context)
                    response: Message = await _resolve(inner_su(_validated(requests), context))
                    _succeeded(method, started, context)
                    return response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort_for(exc, method, context, started)
                    raise

            return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)

        def streaming(
            call: Callable[[Any, grpc.aio.ServicerContext], Any],
        ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Message]]:
            # grpc.aio picks the streaming mode by asking whether the handler
            # is an async generator function, so the wrapper must be one.
            async def handler(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Message]:
                started = _begin(context)
                try:
                    await admit(method, context)
                    async for response in await _resolve(call(request, context)):
                        yield response
                    _succeeded(method, started, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort_for(exc, method, context, started)

            return handler

        if handler.unary_stream:
            inner_us = handler.unary_stream

            def unary_stream(request: Message, context: grpc.aio.ServicerContext) -> Any:
                validate_request(request)
                return inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(streaming(unary_stream), **serializers)

        inner_ss = handler.stream_stream

        def stream_stream(
            requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
        ) -> Any:
            return inner_ss(_validated(requests), context)

        return grpc.stream_stream_rpc_method_handler(streaming(stream_stream), **serializers)
