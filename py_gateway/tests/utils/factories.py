"""Users and their credentials, made straight in the database for test setup.

Hashing once per password keeps setup fast; the hashes are real Argon2id
with the gateway's default parameters, so Login works against them.
Accounts are made with their email verified (as if the verification link had
been opened), so Login admits them under the default
NUELL_REQUIRE_EMAIL_VERIFICATION=true; pass `email_verified=False` for one
that has not. tests/services/test_account_lifecycle.py runs the real flow.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import argon2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from nuell_gateway.authz import Role, scope_string
from nuell_gateway.db.models import AuthSession, User
from nuell_gateway.db.posts import create_post
from nuell_gateway.security.tokens import AccessTokens
from tests.utils.samples import STRONG_PASSWORD


@cache
def hash_of(password: str) -> str:
    return argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(password)


@dataclass(frozen=True)
class TestUser:
    """A user row plus what a client would hold."""

    __test__ = False  # not a pytest test class

    id: uuid.UUID
    email: str
    password: str
    role: Role
    # A live session made with the account, which `bearer` tokens belong to.
    session_id: uuid.UUID


async def make_user(
    sessions: async_sessionmaker[AsyncSession],
    *,
    email: str | None = None,
    role: Role = Role.USER,
    password: str = STRONG_PASSWORD,
    is_active: bool = True,
    hashed_password: str | None = None,
    email_verified: bool = True,
    locale: str = "en",
) -> TestUser:
    user_id = uuid7()
    session_id = uuid7()
    email = email or f"user-{user_id.hex[-12:]}@example.com"
    async with sessions.begin() as session:
        session.add(
            User(
                id=user_id,
                email=email,
                hashed_password=hashed_password or hash_of(password),
                role=str(role),
                is_active=is_active,
                email_verified=email_verified,
                locale=locale,
            )
        )
        await session.flush()
        session.add(
            AuthSession(
                id=session_id, user_id=user_id, expires_at=datetime.now(UTC) + timedelta(days=1)
            )
        )
    return TestUser(id=user_id, email=email, password=password, role=role, session_id=session_id)


def bearer(tokens: AccessTokens, user: TestUser) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a fresh, valid access token for `user`."""
    token = tokens.issue(
        user_id=user.id, session_id=user.session_id, scopes=scope_string(user.role)
    ).token
    return (("authorization", f"Bearer {token}"),)


async def make_post(
    sessions: async_sessionmaker[AsyncSession], *, author: TestUser, content: str = "hello"
) -> uuid.UUID:
    """A post by `author`, straight into the database; returns its id."""
    async with sessions.begin() as session:
        post = await create_post(session, author_id=author.id, content=content)
    return post.id
