"""How a call's messages are encoded: protobuf, or JSON for Connect's JSON calls.

A Connect client may send JSON. The edge's Connect bridge turns such a call
into gRPC with the content type `application/grpc+json` and passes the
messages on as they are. grpcio hides a call's content type from its
handlers, so the edge repeats it in `x-nuell-content-type`, and the boundary
decodes requests and encodes replies here, once it has read the metadata,
rather than in grpcio's (de)serializers, which see only bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

CONTENT_TYPE_HEADER = "x-nuell-content-type"
JSON_CONTENT_TYPE = "application/grpc+json"


class Undecodable:
    """Stands in for a request body that does not parse as its message type.

    Raising in a deserializer makes grpc answer UNKNOWN with its own text,
    before the handler runs; this way the call reaches the boundary, which
    authenticates first and then answers INVALID_ARGUMENT with details.
    """


UNDECODABLE = Undecodable()


@dataclass(frozen=True, slots=True)
class Body:
    """A request message as it arrived, decoded once the call's codec is known."""

    data: bytes


def receive(data: bytes) -> Body:
    """grpcio's request deserializer for every method: keep the bytes."""
    return Body(data)


def send(reply: Message | bytes) -> bytes:
    """grpcio's response serializer: a JSON reply is already bytes."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


@dataclass(frozen=True, slots=True)
class Codec:
    """One call's encoding of its request type and replies."""

    request_type: type[Message]
    json: bool = False

    def decode(self, body: Body) -> Message | Undecodable:
        try:
            if not self.json:
                return self.request_type.FromString(body.data)
            fields = json.loads(body.data)
            if not isinstance(fields, dict):  # a message is a JSON object, never `[]` or `1`
                return UNDECODABLE
            return json_format.ParseDict(fields, self.request_type())
        except Exception:  # DecodeError, JSON and ParseError, whatever a hostile body provokes
            return UNDECODABLE

    def encode(self, reply: Message) -> Message | bytes:
        if not self.json:
            return reply
        # proto3's JSON mapping (lowerCamel names, int64 as strings, defaults
        # left out), compact, and UTF-8 as it is: Japanese stays readable.
        fields = json_format.MessageToDict(reply)
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def codec_for(metadata: Iterable[Any], request_type: type[Message]) -> Codec:
    """The codec the edge says this call uses; protobuf unless told otherwise."""
    for key, value in metadata:
        if key == CONTENT_TYPE_HEADER:
            media = value.split(";", 1)[0].strip().lower()
            return Codec(request_type, json=media == JSON_CONTENT_TYPE)
    return Codec(request_type)
