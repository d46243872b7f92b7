"""nuell.compute.v1.ComputeService: served here, forwarded to rust_compute.

The gateway authenticates and authorizes the caller (scope `compute`),
validates the request against the proto rules, and forwards it with the
caller's remaining deadline and a request id. rust_compute is never
reachable from outside; the Python reference implementation is never used
as a stand-in when it is down (the caller gets UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1 import compute_service_pb2_grpc

from nuell_gateway.compute_client import Forwarding
from nuell_gateway.errors import DomainError
from nuell_gateway.resources import Resources


class ComputeService(compute_service_pb2_grpc.ComputeServiceServicer):
    """Forwards every call to rust_compute.

    Only the fields the contract defines go on: unknown fields are dropped
    first. protobuf keeps a known field number sent with the wrong wire type
    as an unknown field, which prost (rightly) refuses, so forwarding it
    would turn the caller's garbage into rust_compute's error.
    """

    def __init__(self, resources: Resources) -> None:
        self._compute = resources.compute

    async def Analyze(
        self, request: pb.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeResponse:
        request.DiscardUnknownFields()
        return await self._compute.analyze(request, _forwarding(context))

    async def Compare(
        self, request: pb.CompareRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareResponse:
        request.DiscardUnknownFields()
        return await self._compute.compare(request, _forwarding(context))

    async def FindNearDuplicates(
        self, request: pb.FindNearDuplicatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.FindNearDuplicatesResponse:
        request.DiscardUnknownFields()
        return await self._compute.find_near_duplicates(request, _forwarding(context))

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenizeResponse:
        request.DiscardUnknownFields()
        return await self._compute.tokenize(request, _forwarding(context))

    async def CompareMany(
        self, request: pb.CompareManyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareManyResponse:
        request.DiscardUnknownFields()
        return await self._compute.compare_many(request, _forwarding(context))

    async def AnalyzeStream(
        self,
        request_iterator: AsyncIterator[pb.AnalyzeStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AnalyzeStreamResponse]:
        # The incoming stream raises at its first invalid message. Raised
        # inside the call to rust_compute, that would be swallowed and leave
        # both calls hanging; instead the onward stream just ends there,
        # rust_compute answers everything before it, and then the caller
        # gets the error.
        refusal: DomainError | None = None

        async def onward() -> AsyncIterator[pb.AnalyzeStreamRequest]:
            nonlocal refusal
            try:
                async for request in request_iterator:
                    request.DiscardUnknownFields()
                    yield request
            except DomainError as exc:
                refusal = exc

        async for response in self._compute.analyze_stream(onward(), _forwarding(context)):
            yield response
        if refusal is not None:
            raise refusal


def _forwarding(context: grpc.aio.ServicerContext) -> Forwarding:
    """The caller's remaining deadline, for the call onward (ids travel by themselves)."""
    return Forwarding(seconds_left=context.time_remaining())
