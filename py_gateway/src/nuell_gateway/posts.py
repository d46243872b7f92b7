"""Post rules: who reads and writes which post, at which version, after which checks.

Keyword-only functions over the process's `Resources`; the PostService
servicer decodes a request, calls one of them and encodes what it returns.
The rules kept here:

- Everyone signed in reads posts; posts of deactivated authors only
  moderators (`posts:moderate`), who also edit and delete anyone's post.
- A write that may not happen is NOT_FOUND, PERMISSION_DENIED or ABORTED
  (stale version), checked in that order so a stranger learns nothing from
  an etag, and authorised before any analysis, so the near-duplicate check
  tells nothing about someone else's posts.
- New content gets its analysis and the near-duplicate check
  (`post_analysis`); an edit that changes nothing keeps update_time and etag.
- A page token only continues the listing it came from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from nuell_gateway.authz import Caller, Scope
from nuell_gateway.db import hot_reads
from nuell_gateway.db import posts as post_rows
from nuell_gateway.db.hot_reads import PostRow
from nuell_gateway.db.models import Post
from nuell_gateway.errors import Aborted, NotFound
from nuell_gateway.pagination import page_size
from nuell_gateway.post_analysis import analysis_for_write
from nuell_gateway.resources import Resources

DEFAULT_PAGE_SIZE = 20


def _not_found(post_id: uuid.UUID) -> NotFound:
    return NotFound("no post has this id", reason="POST_NOT_FOUND", metadata={"id": str(post_id)})


def _stale() -> Aborted:
    return Aborted(
        "the post changed since you read it; read it again and retry", reason="ETAG_MISMATCH"
    )


def _moderates(someone: Caller) -> bool:
    """Moderators see and act on every post, those of deactivated authors included."""
    return someone.has(Scope.POSTS_MODERATE)


async def create_post(resources: Resources, *, author: Caller, content: str) -> Post:
    """A new post by `author`; FAILED_PRECONDITION (NEAR_DUPLICATE) if it repeats a recent one."""
    analysis = await analysis_for_write(
        resources, author_id=author.user_id, content=content, exclude=None
    )
    async with resources.sessions.begin() as session:
        return await post_rows.create_post(
            session,
            author_id=author.user_id,
            content=content,
            analysis=analysis.columns,
            band_keys=analysis.band_keys,
        )


async def get_post(resources: Resources, *, reader: Caller, post_id: uuid.UUID) -> PostRow:
    post = await resources.post_reads.get(post_id, include_inactive_authors=_moderates(reader))
    if post is None:
        raise _not_found(post_id)
    return post


async def list_posts(
    resources: Resources,
    *,
    reader: Caller,
    author_id: uuid.UUID | None,
    requested_page_size: int,
    page_token: str,
) -> tuple[Sequence[PostRow], str]:
    """One page of posts, newest first (of one author, or everyone's), and the next page's token."""
    limit = page_size(requested_page_size, default=DEFAULT_PAGE_SIZE)
    moderates = _moderates(reader)
    # A token only pages the listing it came from (same author filter and view).
    scope = f"posts.list:{author_id or '*'}:{int(moderates)}"
    tokens = resources.page_tokens
    before = tokens.position(page_token, scope=scope)
    # One extra row tells whether another page exists.
    rows = await hot_reads.list_posts(
        resources.hot_reads,
        author_id=author_id,
        before=before,
        limit=limit + 1,
        include_inactive_authors=moderates,
    )
    return tokens.next_page(rows, limit, scope=scope)


async def edit_post(
    resources: Resources,
    *,
    editor: Caller,
    post_id: uuid.UUID,
    content: str,
    expected_version: int | None,
) -> Post | PostRow:
    """The post with new `content`, if `editor` may change it at `expected_version`."""
    current = await _writable(resources, editor, post_id, expected_version)
    if current.content == content:
        # Nothing changes, so neither do update_time and the etag.
        return current
    analysis = await analysis_for_write(
        resources, author_id=uuid.UUID(current.user_id), content=content, exclude=post_id
    )
    async with resources.sessions.begin() as session:
        updated = await post_rows.update_post_content(
            session,
            post_id=post_id,
            content=content,
            expected_version=current.version,
            analysis=analysis.columns,
            band_keys=analysis.band_keys,
        )
    if updated is None:
        # Another writer committed since we read the post.
        raise _stale()
    return updated


async def delete_post(
    resources: Resources, *, deleter: Caller, post_id: uuid.UUID, expected_version: int | None
) -> None:
    """Delete the post, if `deleter` may (its author, or a moderator) at `expected_version`."""
    async with resources.sessions.begin() as session:
        deleted = await post_rows.delete_post(
            session,
            post_id=post_id,
            # None: a moderator's delete, any author's post.
            author_id=None if _moderates(deleter) else deleter.user_id,
            expected_version=expected_version,
        )
    if not deleted:
        # Only a refusal reads the row, to say why; it always raises,
        # since versions only grow and a stale etag stays stale.
        await _writable(resources, deleter, post_id, expected_version)
        raise _stale()


async def _writable(
    resources: Resources, writer: Caller, post_id: uuid.UUID, expected_version: int | None
) -> PostRow:
    """The post, if `writer` may change it at `expected_version`.

    Otherwise NOT_FOUND, PERMISSION_DENIED or ABORTED, checked in that
    order so a stranger learns nothing from an etag.
    """
    post = await get_post(resources, reader=writer, post_id=post_id)
    writer.require_self_or(uuid.UUID(post.user_id), Scope.POSTS_MODERATE)
    if expected_version is not None and expected_version != post.version:
        raise _stale()
    return post
