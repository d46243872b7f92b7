"""The request id that follows a call from the edge to rust_compute and back."""

from __future__ import annotations

import uuid

import grpc

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128


def request_id_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's request id if it sent a sane one, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if (
            key == REQUEST_ID_HEADER
            and isinstance(value, str)
            and 0 < len(value) <= MAX_REQUEST_ID_CHARS
            and value.isprintable()
        ):
            return value
    return uuid.uuid4().hex
