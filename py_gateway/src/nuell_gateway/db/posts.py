"""Writes to `posts`. Keyword-only functions over a caller-owned session.

The reads (GetPost, the feeds) are in `hot_reads`.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import Post


async def create_post(session: AsyncSession, *, author_id: uuid.UUID, content: str) -> Post:
    post = Post(id=uuid7(), user_id=author_id, content=content)
    session.add(post)
    await session.flush()
    await session.refresh(post)
    return post


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
