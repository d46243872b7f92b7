"""A real SMTP server inside the test process (aiosmtpd), and the mails it received.

It runs on its own thread and event loop (aiosmtpd's Controller), keeps its
port across `stop()` and `start()` (to play an SMTP outage), and parses
every message it receives with the standard library's `email` package, so
tests read subjects and bodies exactly as a mail client would. With a
certificate it speaks TLS as providers do: STARTTLS required before AUTH, or
TLS from the first byte (smtps).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

LINK = re.compile(r"/\?(verify_email|reset_password|confirm_email)=([A-Za-z0-9_-]+)")


@dataclass
class Received:
    envelope_to: list[str]
    message: EmailMessage
    # How it came: over TLS, and signed in as whom (None: no AUTH).
    over_tls: bool = False
    login: str | None = None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())

    def token(self, parameter: str) -> str:
        """The token of the `?<parameter>=` link, the same in both bodies."""
        found = {m.group(2) for m in LINK.finditer(self.text) if m.group(1) == parameter}
        assert len(found) == 1, self.text
        html = {m.group(2) for m in LINK.finditer(self.html) if m.group(1) == parameter}
        assert html == found
        return found.pop()


def _over_tls(server: Any) -> bool:
    """Whether the connection is encrypted, STARTTLS or from the first byte."""
    return server.transport.get_extra_info("ssl_object") is not None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Recipients answered `550` at RCPT, as a server refusing one message.
    refused: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.lower() in self.refused:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data if session.authenticated else None
        with self.lock:
            self.received.append(
                Received(list(envelope.rcpt_tos), parsed, _over_tls(server), login)
            )
        return "250 Message accepted for delivery"


class Mailbox:
    """An SMTP server on 127.0.0.1 and a free port; `url` is its NUELL_SMTP_URL.

    `tls` with a `certificate` (for 127.0.0.1) and `credentials`: "starttls"
    requires STARTTLS, then AUTH; "implicit" is TLS from the first byte.
    """

    def __init__(
        self,
        *,
        tls: Literal["starttls", "implicit"] | None = None,
        certificate: trustme.LeafCert | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._handler = _Handler()
        self._controller: Controller | None = None
        self._tls = tls
        self._credentials = credentials
        self._server_context: ssl.SSLContext | None = None
        if certificate is not None:
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certificate.configure_cert(self._server_context)

    def refuse(self, address: str) -> None:
        """Answer `550` to every mail for `address` from now on."""
        self._handler.refused.add(address.lower())

    @property
    def url(self) -> str:
        scheme = "smtps" if self._tls == "implicit" else "smtp"
        user = ":".join(self._credentials) + "@" if self._credentials else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        given = (auth_data.login.decode(), auth_data.password.decode())
        return AuthResult(success=given == self._credentials, auth_data=given[0])

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self._tls == "starttls":
            options = {"tls_context": self._server_context, "require_starttls": True}
        elif self._tls == "implicit":
            # aiosmtpd cannot tell that a connection it accepted in TLS is
            # encrypted, so it would refuse AUTH without this.
            options = {"ssl_context": self._server_context, "auth_require_tls": False}
        if self._credentials is not None:
            options |= {"authenticator": self._authenticate, "auth_required": True}
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, **options
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in (a.lower() for a in r.envelope_to)]

    def wait_for_sync(self, count: int, *, seconds: float = 10.0) -> list[Received]:
        """`wait_for` for tests without an event loop."""
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} mails arrived"
            time.sleep(0.05)
        return self.received

    async def wait_for(self, count: int, *, seconds: float = 10.0) -> list[Received]:
        """The mails once at least `count` have arrived (fails after `seconds`)."""
        async with asyncio.timeout(seconds):
            # Polled: the server runs on its own thread and event loop.
            while len(self.received) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self.received
