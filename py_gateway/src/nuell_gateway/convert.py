"""Database rows to proto messages, and the etags derived from row versions."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from nuell.posts.v1 import post_pb2
from nuell.users.v1 import user_pb2

from nuell_gateway.db.hot_reads import PostRow
from nuell_gateway.db.models import Post, User

ROLE_TO_PROTO = {"user": user_pb2.ROLE_USER, "admin": user_pb2.ROLE_ADMIN}
ROLE_FROM_PROTO = {value: key for key, value in ROLE_TO_PROTO.items()}


def etag(resource_id: uuid.UUID, version: int) -> str:
    """Opaque to clients, changes with every write: `<version>-<check>`.

    The version lets a conditional write go straight into one UPDATE; the
    check (bound to the resource id) tells a real etag from an invented one.
    """
    return f"{version}-{_etag_check(resource_id, version)}"


def version_from_etag(resource_id: uuid.UUID, value: str) -> int | None:
    """The version an etag of this resource names; None if it names none (stale)."""
    version_text, _, check = value.partition("-")
    # ASCII digits only: str.isdigit() also accepts '²' and '①', which int() refuses.
    if not (version_text.isascii() and version_text.isdigit()) or len(version_text) > 18:
        return None
    version = int(version_text)
    return version if check == _etag_check(resource_id, version) else None


def _etag_check(resource_id: uuid.UUID, version: int) -> str:
    return hashlib.blake2b(f"{resource_id}:{version}".encode(), digest_size=6).hexdigest()


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


ANALYSIS_STATE_TO_PROTO = {
    "pending": post_pb2.ANALYSIS_STATE_PENDING,
    "ready": post_pb2.ANALYSIS_STATE_READY,
}


def post_to_proto(post: Post | PostRow) -> post_pb2.Post:
    analysis = post_pb2.PostAnalysis(state=ANALYSIS_STATE_TO_PROTO[post.analysis_state])
    if post.analysis_state == "ready":
        analysis.word_count = post.word_count or 0
        analysis.reading_time_seconds = post.reading_time_seconds or 0
        # Stored as a signed bigint; the proto field is the same 64 bits unsigned.
        analysis.simhash = (post.simhash or 0) & 0xFFFF_FFFF_FFFF_FFFF
    return post_pb2.Post(
        id=str(post.id),
        author_id=str(post.user_id),
        content=post.content,
        create_time=timestamp(post.created_at),
        update_time=timestamp(post.updated_at),
        etag=etag(post.id, post.version),
        analysis=analysis,
    )
