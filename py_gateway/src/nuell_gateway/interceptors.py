"""The call boundary every Nuell RPC passes through.

One interceptor wraps each handler so that, in one place and for every RPC:
the request (each message, for streams) is validated against the proto's
rules before any work; `DomainError`s become statuses with details; a
contract RPC with no implementation yet answers UNIMPLEMENTED; and anything
unexpected is logged with its stack and answered INTERNAL without detail.
Health and reflection pass through untouched.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status

from nuell_gateway.errors import DomainError, Unimplemented, internal_error_status
from nuell_gateway.validation import validate_request

logger = logging.getLogger(__name__)

# Only the contract's services get the boundary; health and reflection are
# grpc's own and validate nothing of ours.
_NUELL_PREFIX = "/nuell."


async def _abort_for(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    """Answer the call with the status `exc` stands for (always raises)."""
    if isinstance(exc, NotImplementedError):
        exc = Unimplemented(f"{method.lstrip('/')} is not implemented yet")
    if isinstance(exc, DomainError):
        status = exc.to_rpc_status()
    else:
        logger.error("unexpected error in %s", method, exc_info=exc, extra={"method": method})
        status = internal_error_status()
    await context.abort_with_status(rpc_status.to_status(status))


async def _validated(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
    async for request in requests:
        validate_request(request)
        yield request


async def _resolve(result: Any) -> Any:
    """A handler may return a value, an awaitable or an async iterator."""
    return await result if inspect.isawaitable(result) else result


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner_uu: Callable[..., Awaitable[Message]] = handler.unary_unary

        async def unary_unary(request: Message, context: grpc.aio.ServicerContext) -> Message:
            try:
                validate_request(request)
                return await _resolve(inner_uu(request, context))  # type: ignore[no-any-return]
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, method, context)
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)

    if handler.stream_unary:
        inner_su: Callable[..., Awaitable[Message]] = handler.stream_unary

        async def stream_unary(
            requests: AsyncIterator[Message], context: grpc.aio.ServicerContext
        ) -> Message:
            try:
                return await _resolve(inner_su(_validated(requests), context))  # type: ignore[no-any-return]
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, method, context)
                raise

        return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)

    def streaming(
        call: Callable[[Any, grpc.aio.ServicerContext], Any],
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Message]]:
        # grpc.aio picks the streaming mode by asking whether the handler is
        # an async generator function, so the wrapper must be one.
        async def handler(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Message]:
            try:
                async for response in await _resolve(call(request, context)):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(exc, method, context)

        return handler

    if handler.unary_stream:
        inner_us = handler.unary_stream

        def unary_stream(request: Message, context: grpc.aio.ServicerContext) -> Any:
            validate_request(request)
            return inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(streaming(unary_stream), **serializers)

    inner_ss = handler.stream_stream

    def stream_stream(requests: AsyncIterator[Message], context: grpc.aio.ServicerContext) -> Any:
        return inner_ss(_validated(requests), context)

    return grpc.stream_stream_rpc_method_handler(streaming(stream_stream), **serializers)


class CallBoundary(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Validates, translates errors and hides bugs for every Nuell RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(_NUELL_PREFIX):
            return handler
        return _wrap(handler, method)
