"""Argon2id hashing (security/passwords.py): verification, the dummy hash for
unknown accounts, and rehashing when the parameters rise."""

from __future__ import annotations

from collections.abc import Iterator

import argon2
import pytest
from sqlalchemy.engine import URL

from nuell_gateway.security.passwords import Passwords
from tests.conftest import make_settings

PASSWORD = "富士山-Climb-2026!"  # Japanese passwords are ordinary passwords


@pytest.fixture
def passwords(database_url: URL) -> Iterator[Passwords]:
    hasher = Passwords(make_settings(database_url))
    yield hasher
    hasher.close()


async def test_a_hash_is_argon2id_and_opens_only_with_its_password(passwords: Passwords) -> None:
    stored = await passwords.hash(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert (await passwords.verify(stored, PASSWORD)).ok
    for wrong in ["富士山-climb-2026!", "富士山-Climb-2026", ""]:
        assert not (await passwords.verify(stored, wrong)).ok


async def test_no_stored_hash_never_verifies(passwords: Passwords) -> None:
    # The dummy hash is spent on, never accepted, even with its own text.
    for attempt in [PASSWORD, "not a real password; only spends time"]:
        assert (await passwords.verify(None, attempt)).ok is False


async def test_a_broken_stored_hash_is_a_failed_verification(passwords: Passwords) -> None:
    assert not (await passwords.verify("$argon2id$garbage", PASSWORD)).ok


async def test_a_weaker_hash_is_rehashed_under_the_current_parameters(database_url: URL) -> None:
    weaker = argon2.PasswordHasher(time_cost=2, memory_cost=19456).hash(PASSWORD)
    passwords = Passwords(make_settings(database_url, argon2_time_cost=3))
    try:
        outcome = await passwords.verify(weaker, PASSWORD)
        current = await passwords.verify(await passwords.hash(PASSWORD), PASSWORD)
    finally:
        passwords.close()
    assert outcome.ok
    assert outcome.rehashed is not None
    assert outcome.rehashed.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    assert argon2.PasswordHasher().verify(outcome.rehashed, PASSWORD)
    assert current.ok
    assert current.rehashed is None
