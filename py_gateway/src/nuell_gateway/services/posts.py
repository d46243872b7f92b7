"""nuell.posts.v1.PostService: publishing and reading posts."""

from __future__ import annotations

import uuid
from typing import TypedDict

import grpc
from nuell.posts.v1 import post_service_pb2 as pb
from nuell.posts.v1 import post_service_pb2_grpc

from nuell_gateway.authz import Caller, Scope, caller
from nuell_gateway.convert import post_fields, post_to_proto, version_from_etag
from nuell_gateway.db import hot_reads, posts
from nuell_gateway.db.hot_reads import PostRow
from nuell_gateway.errors import Aborted, NotFound
from nuell_gateway.fieldmask import checked_paths
from nuell_gateway.pagination import page_size
from nuell_gateway.post_analysis import analysis_for_write
from nuell_gateway.resources import Resources

DEFAULT_PAGE_SIZE = 20
MUTABLE_PATHS = frozenset({"content"})
IMMUTABLE_PATHS = frozenset({"id", "author_id", "create_time", "update_time", "etag", "analysis"})


def _not_found(post_id: uuid.UUID) -> NotFound:
    return NotFound("no post has this id", reason="POST_NOT_FOUND", metadata={"id": str(post_id)})


def _stale() -> Aborted:
    return Aborted(
        "the post changed since you read it; read it again and retry", reason="ETAG_MISMATCH"
    )


def _moderates(me: Caller) -> bool:
    """Moderators see and act on every post, those of deactivated authors included."""
    return me.has(Scope.POSTS_MODERATE)


class PostService(post_service_pb2_grpc.PostServiceServicer):
    """Posts: the author writes; everyone signed in reads; moderators may edit or remove."""

    def __init__(self, resources: Resources) -> None:
        self._resources = resources

    async def CreatePost(
        self, request: pb.CreatePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePostResponse:
        author_id = caller().user_id
        analysis = await analysis_for_write(
            self._resources,
            author_id=author_id,
            content=request.content,
            exclude=None,
        )
        async with self._resources.sessions.begin() as session:
            post = await posts.create_post(
                session, author_id=author_id, content=request.content, analysis=analysis
            )
        return pb.CreatePostResponse(post=post_to_proto(post))

    async def GetPost(
        self, request: pb.GetPostRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPostResponse:
        post_id = uuid.UUID(request.id)
        post = await self._resources.post_reads.get(
            post_id, include_inactive_authors=_moderates(caller())
        )
        if post is None:
            raise _not_found(post_id)
        return pb.GetPostResponse(post=post_to_proto(post))

    async def ListPosts(
        self, request: pb.ListPostsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPostsResponse:
        limit = page_size(request.page_size, default=DEFAULT_PAGE_SIZE)
        author_id = uuid.UUID(request.author_id) if request.author_id else None
        moderates = _moderates(caller())
        # A token only pages the listing it came from (same author filter and view).
        scope = f"posts.list:{author_id or '*'}:{int(moderates)}"
        tokens = self._resources.page_tokens
        before = tokens.position(request.page_token, scope=scope)
        # One extra row tells whether another page exists.
        rows = await hot_reads.list_posts(
            self._resources.hot_reads,
            author_id=author_id,
            before=before,
            limit=limit + 1,
            include_inactive_authors=moderates,
        )
        page, next_token = tokens.next_page(rows, limit, scope=scope)
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
        # Authorized before any analysis: the near-duplicate check must tell
        # nothing about someone else's posts.
        current = await self._writable(caller(), post_id, request.post.etag)
        if current.content == request.post.content:
            # Nothing changes, so neither do update_time and the etag.
            return pb.UpdatePostResponse(post=post_to_proto(current))
        analysis = await analysis_for_write(
            self._resources,
            author_id=uuid.UUID(current.user_id),
            content=request.post.content,
            exclude=post_id,
        )
        async with self._resources.sessions.begin() as session:
            updated = await posts.update_post_content(
                session,
                post_id=post_id,
                content=request.post.content,
                expected_version=current.version,
                analysis=analysis,
            )
        if updated is None:
            # Another writer committed since we read the post.
            raise _stale()
        return pb.UpdatePostResponse(post=post_to_proto(updated))

    async def DeletePost(
        self, request: pb.DeletePostRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePostResponse:
        post_id = uuid.UUID(request.id)
        me = caller()
        async with self._resources.sessions.begin() as session:
            deleted = await posts.delete_post(
                session, post_id=post_id, **_write_conditions(me, post_id, request.etag)
            )
        if not deleted:
            # Only a refusal reads the row, to say why; it always raises,
            # since versions only grow and a stale etag stays stale.
            await self._writable(me, post_id, request.etag)
            raise _stale()
        return pb.DeletePostResponse()

    async def _writable(self, me: Caller, post_id: uuid.UUID, etag_value: str) -> PostRow:
        """The post, if `me` may change it at this etag.

        Otherwise NOT_FOUND, PERMISSION_DENIED or ABORTED, checked in that
        order so a stranger learns nothing from an etag.
        """
        post = await self._resources.post_reads.get(
            post_id, include_inactive_authors=_moderates(me)
        )
        if post is None:
            raise _not_found(post_id)
        me.require_self_or(uuid.UUID(post.user_id), Scope.POSTS_MODERATE)
        if etag_value and version_from_etag(post_id, etag_value) != post.version:
            raise _stale()
        return post


def _write_conditions(me: Caller, post_id: uuid.UUID, etag_value: str) -> WriteConditions:
    """Who may write (the author, or anyone for a moderator) and at which version.

    An etag that names no version of this post can never match: -1 makes
    the write refuse, and the refusal is explained as ABORTED.
    """
    expected = None
    if etag_value:
        expected = version_from_etag(post_id, etag_value)
        if expected is None:
            expected = -1
    return WriteConditions(
        author_id=None if _moderates(me) else me.user_id, expected_version=expected
    )


class WriteConditions(TypedDict):
    author_id: uuid.UUID | None
    expected_version: int | None
