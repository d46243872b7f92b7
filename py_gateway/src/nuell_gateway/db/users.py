"""Queries on `users`. Keyword-only functions over a caller-owned session."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import User
from nuell_gateway.errors import AlreadyExists

EMAIL_UNIQUE_INDEX = "uq_users_email_lower"


def normalize_email(email: str) -> str:
    """Trim and lowercase the domain; the local part keeps the case it was given."""
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    hashed_password: str,
    locale: str,
    role: str = "user",
    email_verified: bool = False,
) -> User:
    """Insert an account; `AlreadyExists` if the email is taken in any case."""
    user = User(
        id=uuid7(),
        email=email,
        hashed_password=hashed_password,
        role=role,
        locale=locale,
        email_verified=email_verified,
    )
    try:
        # Added inside the savepoint, so a refusal also takes it out of the
        # session and the transaction can go on (Register's taken path).
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        if EMAIL_UNIQUE_INDEX in str(exc.orig):
            raise AlreadyExists("an account with this email exists", reason="EMAIL_TAKEN") from None
        raise
    await session.refresh(user)
    return user


async def get_user(session: AsyncSession, *, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def find_user_by_email(session: AsyncSession, *, email: str) -> User | None:
    result = await session.execute(
        select(User).where(func.lower(User.email) == func.lower(normalize_email(email)))
    )
    return result.scalar_one_or_none()


async def list_users(
    session: AsyncSession, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[User]:
    """Oldest first, keyset-paged on (created_at, id)."""
    query = select(User).order_by(User.created_at, User.id).limit(limit)
    if after is not None:
        query = query.where(tuple_(User.created_at, User.id) > tuple_(*after))
    return list((await session.execute(query)).scalars())


async def update_user(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    expected_version: int | None,
    values: Mapping[str, Any],
) -> User | None:
    """Apply `values` and bump the version; None if the row (at that version) is gone."""
    query = (
        update(User)
        .where(User.id == user_id)
        .values(**values, version=User.version + 1, updated_at=func.now())
        .returning(User)
        # The identity map may hold this row from an earlier read in the same
        # session; the returned values must replace it.
        .execution_options(populate_existing=True)
    )
    if expected_version is not None:
        query = query.where(User.version == expected_version)
    return (await session.execute(query)).scalar_one_or_none()


async def lock_active_admin_ids(session: AsyncSession) -> set[uuid.UUID]:
    """Ids of the active admins, row-locked until the transaction ends.

    Two admins demoting each other at once serialise here, so the second
    sees the first's change and the last admin always remains. Locking in id
    order, before any other row, keeps concurrent callers from deadlocking.
    """
    result = await session.execute(
        select(User.id)
        .where(User.role == "admin", User.is_active)
        .order_by(User.id)
        .with_for_update()
    )
    return set(result.scalars())


async def any_admin_exists(session: AsyncSession) -> bool:
    result = await session.execute(select(User.id).where(User.role == "admin").limit(1))
    return result.first() is not None
