"""What identifies a call across the three hops: its request id and trace context.

The edge (Envoy) sets `x-request-id`; the gateway keeps a sane one or makes
one, logs it on every line about the call, passes it to rust_compute and
returns it in the response metadata. W3C trace context (`traceparent`)
travels the same way: the gateway continues the caller's trace (or starts
one), names itself as the parent of the call to rust_compute, and logs the
trace and span ids, so logs of all three hops can be joined by either id,
and with the spans `tracing` exports when that is switched on.

Both ids are echoed in the reply's metadata, so only values gRPC can send
back are kept: a request id is 1 to 128 printable ASCII characters with no
space at either end (HTTP/2 forbids one there), and a `traceparent` must
follow W3C Trace Context exactly (lowercase hex, version `ff` and all-zero
ids invalid). Anything else, non-ASCII bytes included, is replaced by a
fresh id and never echoed. rust_compute applies the same rules
(`request_context.rs`).
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT_HEADER = "traceparent"
MAX_REQUEST_ID_CHARS = 128

# Printable ASCII (space included), but no space first or last.
_REQUEST_ID = re.compile(rf"[!-~](?:[ -~]{{0,{MAX_REQUEST_ID_CHARS - 2}}}[!-~])?")
# version, trace id, parent id, flags; later versions may append `-` fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# Flags this gateway understands (sampled, random); others are cleared, as version 00 asks.
_KNOWN_TRACE_FLAGS = 0b11


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """The ids of the call being served."""

    request_id: str
    trace_id: str
    span_id: str  # this hop's span: the parent of anything it calls
    trace_flags: str
    parent_span_id: str | None = None  # the caller's span, from its traceparent
    served: bool = True  # False for work outside any call (the backfill)

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.trace_flags}"

    def outgoing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_HEADER, self.request_id), (TRACEPARENT_HEADER, self.traceparent()))


# Trace and span ids must be unique, not secret (as in OpenTelemetry's own
# generator); a seeded PRNG per process costs no system call per call.
_ids = random.Random()  # noqa: S311

_current: ContextVar[CallIdentity | None] = ContextVar("nuell_call_identity", default=None)


def identify(metadata: object, *, served: bool = True) -> CallIdentity:
    """The call's identity from its metadata; sets it for this call's context."""
    request_id = trace_id = parent_span_id = None
    flags = "01"  # a trace started here is sampled
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            request_id = value
        elif key == TRACEPARENT_HEADER and (parent := parse_traceparent(value)) is not None:
            trace_id, parent_span_id, flags = parent
    identity = CallIdentity(
        request_id=request_id or uuid.uuid4().hex,
        trace_id=trace_id or f"{_ids.getrandbits(128):032x}",
        span_id=f"{_ids.getrandbits(64):016x}",
        trace_flags=flags,
        parent_span_id=parent_span_id,
        served=served,
    )
    _current.set(identity)
    return identity


def current() -> CallIdentity:
    """This call's identity (a fresh one outside any call, e.g. the backfill)."""
    identity = _current.get()
    return identity if identity is not None else identify((), served=False)


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid W3C `traceparent`, else None.

    Version 00 ends after the flags; a later version is read by the same
    layout and may carry more `-` fields, as the specification asks.
    """
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, f"{int(flags, 16) & _KNOWN_TRACE_FLAGS:02x}"


class CallIdentityFilter(logging.Filter):
    """Adds the current call's request id, trace id and span id to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        identity = _current.get()
        if identity is not None:
            record.request_id = identity.request_id
            record.trace_id = identity.trace_id
            record.span_id = identity.span_id
        return True
