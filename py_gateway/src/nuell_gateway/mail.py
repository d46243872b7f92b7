"""Mail: rendering from templates, and the sender that empties the outbox over SMTP.

Every mail is written to `mail_outbox` in the transaction that makes what it
carries (a one-time token, docs/security.md), so a mail exists exactly when
its token does. One sender task per gateway process claims due rows with
FOR UPDATE SKIP LOCKED (no two processes take one row) and hands them to
the SMTP server of `NUELL_SMTP_URL` (STARTTLS where offered, TLS from the
start for smtps://). A row's Message-ID is fixed when it is written, so a
retry is the same message. While SMTP is down or refuses, a mail is retried
with exponential backoff; after `NUELL_MAIL_MAX_ATTEMPTS` it is marked
failed, logged (by outbox id and kind, never address or link) and counted.

Without `NUELL_SMTP_URL` no sender runs: mails wait in the outbox, and are
sent once a gateway with an SMTP server starts.

Templates live in `mail_templates/`, one pair per kind and locale:
`<kind>.<locale>.txt` (its first line is the subject) and
`<kind>.<locale>.html` (autoescaped, extending `layout.html`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nuell_gateway.cancellation import reraise_if_cancelled
from nuell_gateway.config import Settings, SmtpServer
from nuell_gateway.db import outbox
from nuell_gateway.metrics import MAIL_FAILED, MAIL_OUTBOX_DEPTH, MAIL_RETRIED, MAIL_SENT

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("mail_templates")
CLAIM_BATCH = 20
POLL_SECONDS = 1.0
SMTP_TIMEOUT_SECONDS = 10.0
MAX_BACKOFF = timedelta(hours=1)
# Refusals of one message (sender, recipient or content), as opposed to a
# connection that failed.
_REFUSED = (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused)

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    body_text: str
    body_html: str


def render(kind: str, locale: str, **values: Any) -> RenderedMail:
    """The mail of `kind` in `locale` (`ja` or `en`), with `values` filled in."""
    text = _environment.get_template(f"{kind}.{locale}.txt").render(locale=locale, **values)
    subject, _, body = text.partition("\n")
    html = _environment.get_template(f"{kind}.{locale}.html").render(
        locale=locale, subject=subject, **values
    )
    return RenderedMail(subject=subject.strip(), body_text=body.lstrip("\n"), body_html=html)


class Mailer:
    """The sender of one process: wakes when this process queued a mail, or every second."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._settings = settings
        self._sessions = sessions
        self._wake = asyncio.Event()
        self.domain = message_id_domain(settings.mail_from)

    def wake(self) -> None:
        """A mail was committed: send it now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Forever (only when an SMTP server is configured): send what is due."""
        server = self._settings.smtp_server
        if server is None:
            return
        while True:
            try:
                while await self.send_due(server):
                    pass
            except Exception:
                reraise_if_cancelled()
                logger.exception("mail sender failed; retrying")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation
            # that stops this loop at shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()

    async def send_due(self, server: SmtpServer) -> int:
        """Claim and send one batch; how many were claimed."""
        async with self._sessions.begin() as session:
            claimed = await outbox.claim_due(session, limit=CLAIM_BATCH)
            MAIL_OUTBOX_DEPTH.set(await outbox.pending_count(session))
        if not claimed:
            return 0
        settled: set[uuid.UUID] = set()
        try:
            async with aiosmtplib.SMTP(
                hostname=server.host,
                port=server.port,
                use_tls=server.implicit_tls,
                start_tls=None if not server.implicit_tls else False,
                username=server.username,
                password=server.password,
                timeout=SMTP_TIMEOUT_SECONDS,
            ) as smtp:
                for mail in claimed:
                    try:
                        await smtp.send_message(self._message(mail))
                    except _REFUSED as exc:  # this mail only; the connection is fine
                        await self._failed_attempt(mail, type(exc).__name__)
                    else:
                        await self._settle(outbox.mark_sent, mail.id)
                        MAIL_SENT.labels(kind=mail.kind).inc()
                    settled.add(mail.id)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Not connected, or the connection was lost: what is left waits.
            for mail in claimed:
                if mail.id not in settled:
                    await self._failed_attempt(mail, type(exc).__name__)
        return len(claimed)

    def _message(self, mail: outbox.ClaimedMail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = mail.recipient
        message["Subject"] = mail.subject
        message["Message-ID"] = mail.message_id
        message["Date"] = formatdate(localtime=False)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(mail.body_text)
        message.add_alternative(mail.body_html, subtype="html")
        return message

    async def _failed_attempt(self, mail: outbox.ClaimedMail, why: str) -> None:
        extra = {"mail_id": str(mail.id), "kind": mail.kind, "attempts": mail.attempts, "why": why}
        if mail.attempts >= self._settings.mail_max_attempts:
            await self._settle(outbox.mark_failed, mail.id)
            MAIL_FAILED.labels(kind=mail.kind).inc()
            logger.error("mail failed for good", extra=extra)
            return
        delay = min(
            timedelta(seconds=self._settings.mail_retry_seconds * 2 ** (mail.attempts - 1)),
            MAX_BACKOFF,
        )
        async with self._sessions.begin() as session:
            await outbox.retry_later(session, mail_id=mail.id, delay=delay)
        MAIL_RETRIED.labels(kind=mail.kind).inc()
        logger.warning("mail not sent; will retry", extra=extra)

    async def _settle(self, mark: Callable[..., Awaitable[None]], mail_id: uuid.UUID) -> None:
        async with self._sessions.begin() as session:
            await mark(session, mail_id=mail_id)


def message_id_domain(mail_from: str) -> str:
    """The domain of the From address, for Message-IDs (`nuell.localhost` if it has none)."""
    address = mail_from.rsplit("<", 1)[-1].rstrip(">").strip()
    domain = address.rpartition("@")[2]
    return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else "nuell.localhost"
