"""Helpers to call the gateway generically and read rich error details."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from nuell_gateway.services import SERVICES


def contract_methods() -> list[MethodDescriptor]:
    """Every RPC of every service the gateway registers."""
    pool = descriptor_pool.Default()
    return [method for entry in SERVICES for method in pool.FindServiceByName(entry.name).methods]


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass
class ErrorDetails:
    """The google.rpc details of a failed call."""

    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None
    violations: list[error_details_pb2.BadRequest.FieldViolation]
    retry_info: error_details_pb2.RetryInfo | None = None


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Decode `grpc-status-details-bin` of a failed call."""
    trailers = error.trailing_metadata() or ()
    raw = next((v for k, v in trailers if k == "grpc-status-details-bin"), None)
    info = retry = None
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    if raw is not None:
        status = status_pb2.Status.FromString(raw)
        assert status.code == error.code().value[0]
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations.extend(bad_request.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
    return ErrorDetails(error.code(), error.details() or "", info, violations, retry)


async def call_any(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: tuple[tuple[str, str], ...] = (),
) -> object:
    """Call any RPC by descriptor; streams send the one request and drain replies.
    A server stream still open a moment after its headers (a watch, which never
    ends by itself) counts as answered OK, and is cancelled."""
    path = method_path(method)
    serialize = type(request).SerializeToString
    options: dict[str, Any] = {"metadata": metadata, "timeout": 10}
    if method.client_streaming and method.server_streaming:
        stream = channel.stream_stream(path, request_serializer=serialize)
        return [reply async for reply in stream(iter([request]), **options)]
    if method.client_streaming:
        return await channel.stream_unary(path, request_serializer=serialize)(
            iter([request]), **options
        )
    if method.server_streaming:
        call = channel.unary_stream(path, request_serializer=serialize)(request, **options)
        await call.initial_metadata()
        await asyncio.sleep(0.2)  # a refusal is trailers only: done by now
        if not call.done():
            call.cancel()
            return []
        return [reply async for reply in call]
    return await channel.unary_unary(path, request_serializer=serialize)(request, **options)
