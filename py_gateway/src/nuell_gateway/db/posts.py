"""Queries on `posts`. Keyword-only functions over a caller-owned session.

Feeds are newest first and keyset-paged on (created_at, id), matching the
indexes `ix_posts_feed` and `ix_posts_author_feed`: no OFFSET, so a page
costs the same however deep it is, and rows inserted or deleted meanwhile
never shift what the next page returns.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import Post, User


def _visible(query: Select[Post], *, include_inactive_authors: bool) -> Select[Post]:
    """Posts of deactivated authors are hidden unless the caller moderates."""
    if include_inactive_authors:
        return query
    return query.join(User, User.id == Post.user_id).where(User.is_active)


async def create_post(session: AsyncSession, *, author_id: uuid.UUID, content: str) -> Post:
    post = Post(id=uuid7(), user_id=author_id, content=content)
    session.add(post)
    await session.flush()
    await session.refresh(post)
    return post


async def get_post(
    session: AsyncSession, *, post_id: uuid.UUID, include_inactive_authors: bool
) -> Post | None:
    query = _visible(
        select(Post).where(Post.id == post_id), include_inactive_authors=include_inactive_authors
    )
    return (await session.execute(query)).scalar_one_or_none()


async def list_posts(
    session: AsyncSession,
    *,
    author_id: uuid.UUID | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
    include_inactive_authors: bool,
) -> list[Post]:
    """Newest first; `before` is the (created_at, id) of the previous page's last post."""
    query = select(Post).order_by(Post.created_at.desc(), Post.id.desc()).limit(limit)
    if author_id is not None:
        query = query.where(Post.user_id == author_id)
    if before is not None:
        # A row comparison, not the equivalent OR of column comparisons:
        # PostgreSQL turns only the former into an index condition, so a
        # deep page costs what the first does (see docs/posts.md).
        query = query.where(tuple_(Post.created_at, Post.id) < tuple_(*before))
    query = _visible(query, include_inactive_authors=include_inactive_authors)
    return list((await session.execute(query)).scalars())


def _writable_by(author_id: uuid.UUID | None, expected_version: int | None) -> list[Any]:
    """Conditions for a write: the author's own post (None: a moderator's, any) at a version."""
    conditions: list[Any] = []
    if author_id is not None:
        conditions.append(Post.user_id == author_id)
    if expected_version is not None:
        conditions.append(Post.version == expected_version)
    return conditions


async def update_post_content(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    content: str,
    author_id: uuid.UUID | None,
    expected_version: int | None,
) -> Post | None:
    """Change the content in one statement, if every condition holds and it differs.

    None when nothing was written: the caller asks `get_post` why.
    """
    query = (
        update(Post)
        .where(
            Post.id == post_id,
            Post.content != content,
            *_writable_by(author_id, expected_version),
        )
        .values(content=content, version=Post.version + 1, updated_at=func.now())
        .returning(Post)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def delete_post(
    session: AsyncSession,
    *,
    post_id: uuid.UUID,
    author_id: uuid.UUID | None,
    expected_version: int | None,
) -> bool:
    """Delete in one statement if every condition holds; False otherwise."""
    result = await session.execute(
        delete(Post)
        .where(Post.id == post_id, *_writable_by(author_id, expected_version))
        .returning(Post.id)
    )
    return result.first() is not None
