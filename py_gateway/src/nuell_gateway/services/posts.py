"""nuell.posts.v1.PostService: publishing and reading posts."""

from __future__ import annotations

from nuell.posts.v1 import post_service_pb2_grpc

from nuell_gateway.resources import Resources


class PostService(post_service_pb2_grpc.PostServiceServicer):
    """Not served yet: every RPC answers UNIMPLEMENTED through the call boundary."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
