"""Argon2id password hashing off the event loop.

argon2-cffi releases the GIL while hashing, so a small thread pool hashes on
every core while the event loop keeps serving other calls. The pool's size
also bounds how much memory concurrent hashes take (each uses
`argon2_memory_kib`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from nuell_gateway.config import Settings


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of checking a password against a stored hash."""

    ok: bool
    # A fresh hash under the current parameters, when the stored one is weaker.
    rehashed: str | None = None


class Passwords:
    """Hashes and verifies passwords with the configured Argon2id parameters."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=argon2.Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=settings.password_hash_workers, thread_name_prefix="argon2"
        )
        # Verified against when no account matches, so that an unknown email
        # costs exactly what a wrong password does.
        self._dummy_hash = self._hasher.hash("not a real password; only spends time")

    async def hash(self, password: str) -> str:
        """The PHC string for `password`."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        """Check `password`; with no stored hash, spend the same time and fail."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> Verification:
        try:
            self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return Verification(ok=False)
        if stored_hash is None:
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, rehashed=self._hasher.hash(password))
        return Verification(ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
