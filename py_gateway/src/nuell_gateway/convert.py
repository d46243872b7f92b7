"""Database rows to proto messages, and the etags derived from row versions."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from nuell.users.v1 import user_pb2

from nuell_gateway.db.models import User

ROLE_TO_PROTO = {"user": user_pb2.ROLE_USER, "admin": user_pb2.ROLE_ADMIN}
ROLE_FROM_PROTO = {value: key for key, value in ROLE_TO_PROTO.items()}


def etag(resource_id: uuid.UUID, version: int) -> str:
    """Opaque, changes with every write; clients compare it, never parse it."""
    return hashlib.blake2b(f"{resource_id}:{version}".encode(), digest_size=9).hexdigest()


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def user_to_proto(user: User) -> user_pb2.User:
    return user_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        role=ROLE_TO_PROTO[user.role],
        is_active=user.is_active,
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        etag=etag(user.id, user.version),
    )
