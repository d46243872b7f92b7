"""The gateway's one long-lived channel to rust_compute.

Calls carry the caller's remaining deadline and request id. Pure functions
(Analyze, Compare, FindNearDuplicates) are retried by grpc itself on
UNAVAILABLE, with backoff, inside that deadline; the stream never is. When
rust_compute is down, calls fail fast (no wait-for-ready) and the channel
reconnects by itself when it is back. Failures become domain errors here,
once: rust_compute's own statuses pass through with their details; transport
failures are translated, so no internal address reaches a caller. With
trace export on, each call is a CLIENT span (retries included) whose id
goes out as the `traceparent` parent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.rpc import status_pb2
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1 import compute_service_pb2_grpc

from nuell_gateway import request_id, tracing
from nuell_gateway.errors import (
    Cancelled,
    DeadlineExceeded,
    DomainError,
    RelayedStatus,
    ResourceExhausted,
    Unavailable,
)
from nuell_gateway.metrics import COMPUTE_ERRORS

SERVICE = "nuell.compute.v1.ComputeService"
# Batches for rust_compute may be large; the gateway's own inbound limit
# (4 MiB) bounds what a caller can send through it.
MAX_MESSAGE_BYTES = 192 * 1024 * 1024

_RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [
                {"service": SERVICE, "method": method}
                for method in (
                    "Analyze",
                    "Compare",
                    "FindNearDuplicates",
                    "Tokenize",
                    "CompareMany",
                )
            ],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

Response = TypeVar("Response")


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What travels with a call onward: the time left, the request id and trace."""

    seconds_left: float | None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return request_id.current().outgoing_metadata()


def _translate(error: grpc.aio.AioRpcError) -> DomainError:
    """One domain error for whatever rust_compute (or the way to it) answered."""
    failure = _failure(error)
    COMPUTE_ERRORS.labels(reason=failure.reason).inc()
    return failure


def _failure(error: grpc.aio.AioRpcError) -> DomainError:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return RelayedStatus(status_pb2.Status.FromString(value))
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("the deadline passed before the analysis finished")
    if code == grpc.StatusCode.CANCELLED:
        return Cancelled("the call was cancelled")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(
            "the request is too large for the analysis service", reason="MESSAGE_TOO_LARGE"
        )
    return Unavailable(
        "the text analysis service is unavailable; retry later", reason="COMPUTE_UNAVAILABLE"
    )


class ComputeClient:
    """A stub over one channel, with deadline and request-id propagation."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 1),
                ("grpc.service_config", json.dumps(_RETRY_POLICY)),
                # Find out quickly when the peer is gone, and reconnect soon
                # after it is back.
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self._stub = compute_service_pb2_grpc.ComputeServiceStub(self._channel)

    async def analyze(self, request: pb.AnalyzeRequest, via: Forwarding) -> pb.AnalyzeResponse:
        return await self._unary(self._stub.Analyze, "Analyze", request, via)

    async def compare(self, request: pb.CompareRequest, via: Forwarding) -> pb.CompareResponse:
        return await self._unary(self._stub.Compare, "Compare", request, via)

    async def find_near_duplicates(
        self, request: pb.FindNearDuplicatesRequest, via: Forwarding
    ) -> pb.FindNearDuplicatesResponse:
        return await self._unary(self._stub.FindNearDuplicates, "FindNearDuplicates", request, via)

    async def tokenize(self, request: pb.TokenizeRequest, via: Forwarding) -> pb.TokenizeResponse:
        return await self._unary(self._stub.Tokenize, "Tokenize", request, via)

    async def compare_many(
        self, request: pb.CompareManyRequest, via: Forwarding
    ) -> pb.CompareManyResponse:
        return await self._unary(self._stub.CompareMany, "CompareMany", request, via)

    async def analyze_stream(
        self,
        requests: AsyncIterator[pb.AnalyzeStreamRequest],
        via: Forwarding,
    ) -> AsyncIterator[pb.AnalyzeStreamResponse]:
        span = tracing.ClientSpan(f"{SERVICE}/AnalyzeStream") if tracing.enabled else None
        call = self._stub.AnalyzeStream(
            requests,
            timeout=via.seconds_left,
            metadata=via.metadata if span is None else span.metadata,
        )
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise
        try:
            async for response in call:
                yield response
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise _translate(error) from None
        finally:
            call.cancel()
            if span is not None:
                span.end(code)

    async def _unary(self, method: object, name: str, request: object, via: Forwarding) -> Response:
        span = tracing.ClientSpan(f"{SERVICE}/{name}") if tracing.enabled else None
        code = grpc.StatusCode.CANCELLED  # unless it ends otherwise
        try:
            response: Response = await method(  # type: ignore[operator]
                request,
                timeout=via.seconds_left,
                metadata=via.metadata if span is None else span.metadata,
            )
            code = grpc.StatusCode.OK
            return response
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise _translate(error) from None
        finally:
            if span is not None:
                span.end(code)

    async def close(self) -> None:
        await self._channel.close()
