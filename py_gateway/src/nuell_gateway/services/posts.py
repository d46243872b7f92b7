"""nuell.posts.v1.PostService: publishing and reading posts (rules in `nuell_gateway.posts`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1 import post_service_pb2_grpc

from nuell_gateway import posts, search
from nuell_gateway.authz import Caller, authenticate, bearer_token, caller
from nuell_gateway.compute_client import Forwarding
from nuell_gateway.convert import post_fields, post_to_proto
from nuell_gateway.fieldmask import checked_paths
from nuell_gateway.resources import Resources
from nuell_gateway.services.etags import expected_version

MUTABLE_PATHS = frozenset({"content"})
IMMUTABLE_PATHS = frozenset({"id", "author_id", "create_time", "update_time", "etag", "analysis"})


class PostService(post_service_pb2_grpc.PostServiceServicer):
    """Posts: the author writes; everyone signed in reads; moderators may edit or remove."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def CreatePost(
        self, request: pb.CreatePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePostResponse:
        post = await posts.create_post(self._resources, author=caller(), content=request.content)
        return pb.CreatePostResponse(post=post_to_proto(post))

    async def GetPost(
        self, request: pb.GetPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPostResponse:
        post = await posts.get_post(self._resources, reader=caller(), post_id=uuid.UUID(request.id))
        return pb.GetPostResponse(post=post_to_proto(post))

    async def ListPosts(
        self, request: pb.ListPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPostsResponse:
        page, next_token = await posts.list_posts(
            self._resources,
            reader=caller(),
            author_id=uuid.UUID(request.author_id) if request.author_id else None,
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        response = pb.ListPostsResponse(next_page_token=next_token)
        add = response.posts.add
        for post in page:
            add(**post_fields(post))
        return response

    async def UpdatePost(
        self, request: pb.UpdatePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdatePostResponse:
        checked_paths(request.update_mask, mutable=MUTABLE_PATHS, immutable=IMMUTABLE_PATHS)
        post_id = uuid.UUID(request.post.id)
        post = await posts.edit_post(
            self._resources,
            editor=caller(),
            post_id=post_id,
            content=request.post.content,
            expected_version=expected_version(post_id, request.post.etag),
        )
        return pb.UpdatePostResponse(post=post_to_proto(post))

    async def DeletePost(
        self, request: pb.DeletePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePostResponse:
        post_id = uuid.UUID(request.id)
        await posts.delete_post(
            self._resources,
            deleter=caller(),
            post_id=post_id,
            expected_version=expected_version(post_id, request.etag),
        )
        return pb.DeletePostResponse()

    async def SearchPosts(
        self, request: pb.SearchPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchPostsResponse:
        hits, next_token = await search.search_posts(
            self._resources,
            reader=caller(),
            query=request.query,
            author_id=uuid.UUID(request.author_id) if request.author_id else None,
            newest=request.order_by == pb.SEARCH_ORDER_NEWEST,
            requested_page_size=request.page_size,
            page_token=request.page_token,
            via=Forwarding(seconds_left=context.time_remaining()),
        )
        response = pb.SearchPostsResponse(next_page_token=next_token)
        add = response.results.add
        for hit in hits:
            add(post=post_fields(hit.post), score=hit.score)
        return response

    async def ListSimilarPosts(
        self, request: pb.ListSimilarPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSimilarPostsResponse:
        similar = await search.list_similar_posts(
            self._resources,
            reader=caller(),
            post_id=uuid.UUID(request.id),
            requested_page_size=request.page_size,
            via=Forwarding(seconds_left=context.time_remaining()),
        )
        response = pb.ListSimilarPostsResponse()
        add = response.results.add
        for post, jaccard in similar:
            add(post=post_fields(post), jaccard=jaccard)
        return response

    async def WatchPosts(
        self, request: pb.WatchPostsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.PostEvent]:
        token = bearer_token(context.invocation_metadata())

        async def still_allowed() -> Caller:  # the stream outlives the check at its start
            return await authenticate(self._resources, token)

        events = self._resources.post_events.watch(
            caller(),
            author_id=request.author_id,
            resume_token=request.resume_token,
            still_allowed=still_allowed,
            opened=lambda: context.send_initial_metadata(()),
        )
        async for event in events:
            yield event
