"""Queries on `mail_outbox`: enqueue, throttle, claim, settle."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from nuell_gateway.db.models import MailOutbox

# Claimed rows are pushed this far into the future while being sent, so a
# process that dies mid-send leaves them to be retried, not lost.
CLAIM_LEASE = timedelta(minutes=5)


async def lock_address(session: AsyncSession, *, address: str, kind: str) -> None:
    """Serialise, until the transaction ends, the mails of one kind to one address.

    Two requests at once would otherwise both pass the throttle.
    """
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{kind}/{address.lower()}", 0)))
    )


async def recent_count(session: AsyncSession, *, address: str, kind: str, within: timedelta) -> int:
    """Mails of `kind` written for `address` (any case) in the last `within`."""
    result = await session.execute(
        select(func.count())
        .select_from(MailOutbox)
        .where(
            func.lower(MailOutbox.recipient) == address.lower(),
            MailOutbox.kind == kind,
            MailOutbox.created_at > func.now() - within,
        )
    )
    return int(result.scalar_one())


async def enqueue(
    session: AsyncSession,
    *,
    kind: str,
    recipient: str,
    subject: str,
    body_text: str,
    body_html: str,
    domain: str,
) -> None:
    mail_id = uuid7()
    session.add(
        MailOutbox(
            id=mail_id,
            message_id=f"<{mail_id}@{domain}>",
            kind=kind,
            recipient=recipient,
            subject=subject,
            body_text=body_text,
            body_html=body_html,
        )
    )
    await session.flush()


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    id: uuid.UUID
    message_id: str
    kind: str
    recipient: str
    subject: str
    body_text: str
    body_html: str
    attempts: int  # including this one


async def claim_due(session: AsyncSession, *, limit: int) -> list[ClaimedMail]:
    """Pending mails due now, leased to this process; others skip the locked rows."""
    due = (
        select(MailOutbox.id)
        .where(MailOutbox.status == "pending", MailOutbox.next_attempt_at <= func.now())
        .order_by(MailOutbox.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(MailOutbox)
        .where(MailOutbox.id.in_(due.scalar_subquery()))
        .values(attempts=MailOutbox.attempts + 1, next_attempt_at=func.now() + CLAIM_LEASE)
        .returning(
            MailOutbox.id,
            MailOutbox.message_id,
            MailOutbox.kind,
            MailOutbox.recipient,
            MailOutbox.subject,
            MailOutbox.body_text,
            MailOutbox.body_html,
            MailOutbox.attempts,
        )
    )
    return [ClaimedMail(**row._asdict()) for row in result]


async def mark_sent(session: AsyncSession, *, mail_id: uuid.UUID) -> None:
    # The bodies hold live links: forget them once they have left.
    await session.execute(
        update(MailOutbox)
        .where(MailOutbox.id == mail_id)
        .values(status="sent", sent_at=func.now(), body_text="", body_html="")
    )


async def retry_later(session: AsyncSession, *, mail_id: uuid.UUID, delay: timedelta) -> None:
    await session.execute(
        update(MailOutbox)
        .where(MailOutbox.id == mail_id)
        .values(next_attempt_at=func.now() + delay)
    )


async def mark_failed(session: AsyncSession, *, mail_id: uuid.UUID) -> None:
    await session.execute(
        update(MailOutbox)
        .where(MailOutbox.id == mail_id)
        .values(status="failed", body_text="", body_html="")
    )


async def pending_count(session: AsyncSession) -> int:
    result = await session.execute(
        select(func.count()).select_from(MailOutbox).where(MailOutbox.status == "pending")
    )
    return int(result.scalar_one())
