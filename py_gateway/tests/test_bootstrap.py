"""The first admin from the environment, created only while no admin exists."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL

from nuell_gateway.db.models import User
from nuell_gateway.server import Gateway
from tests.conftest import make_settings


async def _admins(gateway: Gateway) -> list[str]:
    async with gateway.resources.sessions() as session:
        result = await session.execute(
            select(User.email, User.email_verified).where(User.role == "admin")
        )
        # Verified at creation: it must sign in without a mail.
        assert all(verified for _, verified in result.all())
        result = await session.execute(select(User.email).where(User.role == "admin"))
        return list(result.scalars())


@pytest.mark.usefixtures("empty_tables")
async def test_bootstrap_admin_is_created_once(database_url: URL) -> None:
    first = await Gateway.start(
        make_settings(
            database_url,
            bootstrap_admin_email="first@example.com",
            bootstrap_admin_password="First-Admin-2026",
        )
    )
    try:
        assert await _admins(first) == ["first@example.com"]
    finally:
        await first.stop()
    second = await Gateway.start(
        make_settings(
            database_url,
            bootstrap_admin_email="second@example.com",
            bootstrap_admin_password="Second-Admin-2026",
        )
    )
    try:
        assert await _admins(second) == ["first@example.com"]
    finally:
        await second.stop()
