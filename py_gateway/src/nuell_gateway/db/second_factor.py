"""Queries on `totp_factors`, `recovery_codes` and `mfa_challenges`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import MfaChallenge, RecoveryCode, TotpFactor


async def get_factor(session: AsyncSession, *, user_id: uuid.UUID) -> TotpFactor | None:
    return await session.get(TotpFactor, user_id)


async def put_pending_factor(
    session: AsyncSession, *, user_id: uuid.UUID, key_id: str, ciphertext: bytes
) -> bool:
    """Store an unconfirmed secret (replacing an earlier unconfirmed one); False if
    the account has a confirmed factor, which is then left alone."""
    statement = (
        insert(TotpFactor)
        .values(user_id=user_id, key_id=key_id, secret_ciphertext=ciphertext)
        .on_conflict_do_update(
            index_elements=[TotpFactor.user_id],
            set_={"key_id": key_id, "secret_ciphertext": ciphertext, "created_at": func.now()},
            where=TotpFactor.confirmed_at.is_(None),
        )
        .returning(TotpFactor.user_id)
    )
    return (await session.execute(statement)).first() is not None


async def use_step(session: AsyncSession, *, user_id: uuid.UUID, step: int) -> bool:
    """Mark a code's time step used; False if it (or a later one) was used already."""
    result = await session.execute(
        update(TotpFactor)
        .where(
            TotpFactor.user_id == user_id,
            or_(TotpFactor.last_step.is_(None), TotpFactor.last_step < step),
        )
        .values(last_step=step)
        .returning(TotpFactor.user_id)
    )
    return result.first() is not None


async def confirm_factor(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    await session.execute(
        update(TotpFactor).where(TotpFactor.user_id == user_id).values(confirmed_at=func.now())
    )


async def replace_recovery_codes(
    session: AsyncSession, *, user_id: uuid.UUID, digests: list[bytes]
) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.add_all(RecoveryCode(user_id=user_id, code_hash=digest) for digest in digests)
    await session.flush()


async def use_recovery_code(session: AsyncSession, *, user_id: uuid.UUID, digest: bytes) -> bool:
    """Spend a recovery code; False if it is unknown or spent (one use, even concurrently)."""
    result = await session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == digest,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=func.now())
        .returning(RecoveryCode.user_id)
    )
    return result.first() is not None


async def remove_factor(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    await session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await session.execute(delete(MfaChallenge).where(MfaChallenge.user_id == user_id))


async def start_challenge(
    session: AsyncSession, *, user_id: uuid.UUID, digest: bytes, ttl: timedelta
) -> None:
    session.add(
        MfaChallenge(
            id=uuid7(),
            user_id=user_id,
            token_hash=digest,
            expires_at=datetime.now().astimezone() + ttl,
        )
    )
    await session.flush()


async def open_challenge(
    session: AsyncSession, *, digest: bytes, max_failures: int
) -> MfaChallenge | None:
    """The live challenge of an mfa_token, locked for this transaction; None if
    it is unknown, used, expired or has had `max_failures` wrong codes."""
    result = await session.execute(
        select(MfaChallenge)
        .where(
            MfaChallenge.token_hash == digest,
            MfaChallenge.used_at.is_(None),
            MfaChallenge.expires_at > func.now(),
            MfaChallenge.failures < max_failures,
        )
        .with_for_update()
    )
    return result.scalar_one_or_none()


async def fail_challenge(session: AsyncSession, *, challenge_id: uuid.UUID) -> None:
    await session.execute(
        update(MfaChallenge)
        .where(MfaChallenge.id == challenge_id)
        .values(failures=MfaChallenge.failures + 1)
    )


async def close_challenge(session: AsyncSession, *, challenge_id: uuid.UUID) -> None:
    await session.execute(
        update(MfaChallenge).where(MfaChallenge.id == challenge_id).values(used_at=func.now())
    )


async def prune_challenges(session: AsyncSession) -> None:
    await session.execute(
        delete(MfaChallenge).where(MfaChallenge.expires_at < func.now() - timedelta(hours=1))
    )
