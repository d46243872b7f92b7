"""Writes to `posts`. Keyword-only functions over a caller-owned session.

The reads (GetPost, the feeds) are in `hot_reads`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import Post, PostBandKey


async def create_post(
    session: AsyncSession,
    *,
    author_id: uuid.UUID,
    content: str,
    analysis: dict[str, Any] | None = None,
    band_keys: list[int] | None = None,
) -> Post:
    """Insert a post; `analysis` holds its analysis columns (pending when absent)."""
    post = Post(id=uuid7(), user_id=author_id, content=content, **(analysis or {}))
    session.add(post)
    await session.flush()
    await _put_band_keys(session, post_id=post.id, band_keys=band_keys or [], replace=False)
    await session.refresh(post)
    return post


async def _put_band_keys(
    session: AsyncSession, *, post_id: uuid.UUID, band_keys: list[int], replace: bool
) -> None:
    """The post's band keys become `band_keys` (PostBandKey.keys; none: no row)."""
    if replace:
        await session.execute(delete(PostBandKey).where(PostBandKey.post_id == post_id))
    if band_keys:
        await session.execute(insert(PostBandKey).values(post_id=post_id, keys=band_keys))


async def update_post_content(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    content: str,
    expected_version: int,
    analysis: dict[str, Any],
    band_keys: list[int] | None = None,
) -> Post | None:
    """New content and its analysis, if the post is still at `expected_version`."""
    query = (
        update(Post)
        .where(Post.id == post_id, Post.version == expected_version)
        .values(content=content, version=Post.version + 1, updated_at=func.now(), **analysis)
        .returning(Post)
        .execution_options(populate_existing=True)
    )
    post = (await session.execute(query)).scalar_one_or_none()
    if post is not None:
        # The old content's keys go whatever happens: stale ones would
        # make candidates of posts that no longer look alike.
        await _put_band_keys(session, post_id=post_id, band_keys=band_keys or [], replace=True)
    return post


async def delete_post(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    author_id: uuid.UUID | None,
    expected_version: int | None,
) -> bool:
    """Delete in one statement if every condition holds; False otherwise."""
    conditions = [Post.id == post_id]
    if author_id is not None:  # None: a moderator's delete, any author's post
        conditions.append(Post.user_id == author_id)
    if expected_version is not None:
        conditions.append(Post.version == expected_version)
    result = await session.execute(delete(Post).where(*conditions).returning(Post.id))
    return result.first() is not None


async def recent_by_author(
    session: AsyncSession,
    *,
    author_id: uuid.UUID,
    since: datetime,
    limit: int,
    exclude: uuid.UUID | None,
) -> list[tuple[uuid.UUID, str]]:
    """(id, content) of the author's newest posts since `since`, on the author feed index."""
    query = (
        select(Post.id, Post.content)
        .where(Post.user_id == author_id, Post.created_at >= since)
        .order_by(Post.created_at.desc(), Post.id.desc())
        .limit(limit)
    )
    if exclude is not None:
        query = query.where(Post.id != exclude)
    return [(row.id, row.content) for row in await session.execute(query)]


async def pending_analysis(
    session: AsyncSession, *, limit: int
) -> list[tuple[uuid.UUID, str, int]]:
    """(id, content, version) of the oldest posts still waiting for analysis or indexing.

    Pending posts are unindexed too (`search_vector` is NULL until the
    analysis lands), so one partial index lists both.
    """
    query = (
        select(Post.id, Post.content, Post.version)
        .where(Post.search_vector.is_(None))
        .order_by(Post.created_at)
        .limit(limit)
    )
    return [(row.id, row.content, row.version) for row in await session.execute(query)]


async def set_analysis(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    version: int,
    columns: dict[str, Any],
    band_keys: list[int],
) -> int:
    """Store an analysis and index if the post still has the analysed content (same version).

    Not a write of the post: version and updated_at stay as they are.
    """
    result = await session.execute(
        update(Post)
        .where(Post.id == post_id, Post.version == version, Post.search_vector.is_(None))
        .values(**columns)
        .returning(Post.id)
    )
    stored = len(result.all())
    if stored:
        await _put_band_keys(session, post_id=post_id, band_keys=band_keys, replace=True)
    return stored
