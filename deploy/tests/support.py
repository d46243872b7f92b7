"""Helpers for the deploy tests: real binaries, HTTP and gRPC-Web clients, the
session's stack. Processes start through deploy.launcher, as everywhere else.

Fixtures built on these live in conftest.py; tests import the plain
functions from here.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import importlib.util
import json
import os
import re
import secrets
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy import stack
from deploy.dev_tls import DevCertificate
from deploy.launcher import Launcher, Running, free_port
from deploy.settings import REPO, Address, StackSettings

DEPLOY_DIR = REPO / "deploy"
RUNNER = (sys.executable, "-m", "deploy.run_stack")
RENDER = (sys.executable, "-m", "deploy.render")
VENV_BIN = Path(sys.executable).parent
ENVOY = VENV_BIN / "envoy"
GRPCURL = VENV_BIN / "grpcurl"
COMPUTE_BIN = stack.COMPUTE_BIN
WEB_DIR = REPO / "web"

# Generous: two cores, and a cargo build may be running next to the tests.
START_TIMEOUT = float(os.environ.get("NUELL_TEST_START_TIMEOUT_SECONDS", "90"))

# Fresh per session: nothing outside the tests can mint a token they accept.
TEST_JWT_KEYS = f"deploy-tests:{secrets.token_urlsafe(48)}"
TEST_TOTP_KEYS = f"deploy-tests:{secrets.token_urlsafe(48)}"


T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


def wait_for_output(
    proc: Running, pattern: re.Pattern[str], *, timeout: float = START_TIMEOUT
) -> re.Match[str]:
    """The first match of `pattern` in `proc`'s output; fails early if it exits."""

    def matched() -> re.Match[str] | None:
        if (code := proc.popen.poll()) is not None and not pattern.search(proc.output()):
            raise AssertionError(
                f"{proc.name} exited with {code} before printing "
                f"{pattern.pattern!r}; its output:\n{proc.log_tail(40)}"
            )
        return pattern.search(proc.output())

    try:
        return wait_for(matched, timeout=timeout, what=f"{proc.name}: {pattern.pattern!r}")
    except AssertionError as exc:
        if "timed out" not in str(exc):
            raise
        raise AssertionError(f"{exc}; its output:\n{proc.log_tail(40)}") from None


def wait_exit(proc: Running, timeout: float) -> int:
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{proc.name} still running after {timeout:.0f} s; its output:\n{proc.log_tail(40)}"
        ) from None


def base_env(**overrides: str) -> dict[str, str]:
    """The environment for a stack process: no inherited Nuell settings or databases."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NUELL_") and key not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["NUELL_JWT_KEYS"] = TEST_JWT_KEYS
    # Two-factor sign-in is on in the stacks under test (the browser tests set it up).
    env["NUELL_TOTP_KEYS"] = TEST_TOTP_KEYS
    # Services run side by side here (the session's, the runner's): each
    # serves its metrics on a port of its own, not the default.
    env["NUELL_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    env["NUELL_COMPUTE_METRICS_ADDR"] = "127.0.0.1:0"
    # Stated, not inherited: the tests hold whichever default the gateway has.
    env["NUELL_REQUIRE_EMAIL_VERIFICATION"] = "true"
    env.update(overrides)
    return env


def otlp_collector() -> Any:
    """A started OtlpCollector (py_gateway/tests/utils/otlp.py, loaded by path:
    one test-side OTLP receiver for both test suites)."""
    path = REPO / "py_gateway" / "tests" / "utils" / "otlp.py"
    spec = importlib.util.spec_from_file_location("nuell_test_otlp", path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module.OtlpCollector().start()


def health_status(target: str, service: str = "", timeout: float = 2.0) -> str | None:
    """The grpc.health.v1 status name at `target`, or None if the call fails."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def grpcurl(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_health_protoset(path: Path) -> Path:
    """grpc/health/v1/health.proto as a protoset, for grpcurl where reflection is off."""
    descriptors = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(descriptors.file.add())
    path.write_bytes(descriptors.SerializeToString())
    return path


def admin_get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return None


def envoy_ready(admin_port: int) -> bool:
    reply = admin_get(admin_port, "/ready")
    return reply is not None and reply[0] == 200 and reply[1].strip() == "LIVE"


# --- the stack ----------------------------------------------------------------

# On the session edge's allowlist besides the test page's own origins.
ALLOWED_ORIGIN = "https://nue-japan.com"
# What browsers may send to the edge, pinned in words rather than read from
# settings.py: a change to it must change the tests too.
CORS_ALLOW_HEADERS_PINNED = (
    "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout,"
    "connect-protocol-version,connect-timeout-ms"
)


@dataclass(frozen=True)
class Backend:
    """rust_compute and py_gateway as the session fixture started them."""

    compute: str  # ip:port
    gateway: str
    database_url: str
    mailbox: str = ""  # MailDev's web and REST API, http://ip:port


def user_exists(database_url: str, email: str) -> bool:
    """Whether an account with this email reached the database."""
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        row = connection.execute(
            "SELECT count(*) FROM users WHERE lower(email) = lower(%s)", (email,)
        ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class Edge:
    """A running Envoy edge and the settings it was rendered from."""

    settings: StackSettings
    proc: Running
    # The listeners' ports, as the settings place them.
    http_port: int
    https_port: int
    admin_port: int

    @property
    def target(self) -> str:
        """host:port of the plaintext listener, for grpcio and grpcurl."""
        return self.settings.edge_http.connect_target

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges by name (admin /stats)."""
        reply = admin_get(self.admin_port, "/stats")
        assert reply is not None, "admin did not answer"
        assert reply[0] == 200, reply
        values = {}
        for line in reply[1].splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                values[name] = int(value)
        return values


def backend_settings() -> StackSettings:
    """The stack's settings with every backend port free, for services side by side."""
    anywhere = "127.0.0.1:0"
    variables = ("NUELL_GATEWAY_ADDR", "NUELL_COMPUTE_ADDR", "NUELL_METRICS_ADDR")
    environ = dict.fromkeys((*variables, "NUELL_COMPUTE_METRICS_ADDR"), anywhere)
    mail = {f"NUELL_MAIL_{part}_PORT": str(free_port()) for part in ("SMTP", "WEB")}
    return stack.with_fixed_ports(StackSettings.from_env(environ | mail))


def edge_settings(
    backend: Backend, certificate: DevCertificate, environ: dict[str, str]
) -> StackSettings:
    """Settings from `environ` on free ports, in front of `backend`, with the test certificate."""
    return dataclasses.replace(
        StackSettings.from_env(environ),
        edge_http=Address("0.0.0.0", free_port()),
        edge_https=Address("0.0.0.0", free_port()),
        edge_admin=Address("127.0.0.1", free_port()),
        gateway=Address.parse(backend.gateway, variable="gateway", allow_port_zero=False),
        edge_tls_cert=certificate.cert,
        edge_tls_key=certificate.key,
    )


def start_envoy(launcher: Launcher, settings: StackSettings, config_dir: Path, name: str) -> Edge:
    """Envoy with the config rendered from `settings`, as the stack starts it, ready."""
    service = stack.envoy_service(
        settings, base_env(), name=name, config=config_dir / f"{name}.yaml"
    )
    (proc,) = launcher.start(service)
    ports = (settings.edge_http.port, settings.edge_https.port, settings.edge_admin.port)
    return Edge(settings, proc, *ports)


# --- HTTP and gRPC-Web ------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP answer with gRPC-Web decoded: status from the headers, else the trailers."""

    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def trailers(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for flags, payload in self.frames:
            if flags & 0x80:
                for line in payload.decode("latin-1").split("\r\n"):
                    name, sep, value = line.partition(":")
                    if sep:
                        found[name.strip().lower()] = value.strip()
        return found

    @property
    def messages(self) -> list[bytes]:
        return [payload for flags, payload in self.frames if not flags & 0x80]

    @property
    def grpc_status(self) -> int | None:
        value = self.headers.get("grpc-status") or self.trailers.get("grpc-status")
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str:
        return self.headers.get("grpc-message") or self.trailers.get("grpc-message", "")


def http_request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    source: str | None = None,
    timeout: float = 30,
) -> Reply:
    source_address = (source, 0) if source else None
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection(
            host, port, timeout=timeout, source_address=source_address
        )
    else:
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=tls, source_address=source_address
        )
    try:
        connection.request(method, path, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read()
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return Reply(response.status, merged, data)
    finally:
        connection.close()


def grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each gRPC-Web frame; flag 0x80 marks the trailers."""
    frames, offset = [], 0
    while offset < len(body):
        flags, length = struct.unpack(">BI", body[offset : offset + 5])
        frames.append((flags, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    assert offset == len(body), "truncated gRPC-Web frame"
    return frames


def grpc_web_call(
    port: int,
    method: str,
    message: bytes = b"",
    *,
    text: bool = False,
    origin: str | None = None,
    headers: Mapping[str, str] | None = None,
    **request_options: Any,
) -> Reply:
    """One gRPC-Web call (`method` is `package.Service/Method`) in binary or text mode."""
    kind = "application/grpc-web-text" if text else "application/grpc-web+proto"
    sent = {
        "content-type": kind,
        "accept": kind,
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-python-tests/1",
        "grpc-timeout": "10S",
        **({"origin": origin} if origin else {}),
        **(headers or {}),
    }
    body = grpc_web_frame(message)
    if text:
        body = base64.b64encode(body)
    reply = http_request(port, "POST", f"/{method}", sent, body, **request_options)
    payload = reply.body
    if text and reply.headers.get("content-type", "").startswith("application/grpc-web-text"):
        # Frames are base64 each, padding included: 4-character groups decode alone.
        payload = b"".join(base64.b64decode(payload[i : i + 4]) for i in range(0, len(payload), 4))
    if reply.status == 200 and reply.headers.get("content-type", "").startswith(
        "application/grpc-web"
    ):
        return Reply(reply.status, reply.headers, payload, parse_frames(payload))
    return reply


def tls_client_context(ca_cert: Path) -> ssl.SSLContext:
    """Verifies the edge against the development CA, as a browser trusting it would."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


# --- mail -------------------------------------------------------------------------

# A link in a mail: the page's address, then one of the three actions and its token.
MAIL_LINK = re.compile(r"(\S+)/\?(verify_email|reset_password|confirm_email)=([A-Za-z0-9_-]+)")


def mark_verified(database_url: str, email: str) -> None:
    """The one shortcut for tests that are not about mail: the address counts as
    proved, as if its owner had followed the verification link (test_mail.py
    follows it for real)."""
    with psycopg.connect(database_url, connect_timeout=5) as connection:
        updated = connection.execute(
            "UPDATE users SET email_verified = true WHERE lower(email) = lower(%s)", (email,)
        ).rowcount
    assert updated == 1, f"no account for {email}"


def mails_to(mailbox: str, address: str) -> list[dict[str, Any]]:
    """Every mail MailDev (`mailbox`, its REST API) holds for `address`, oldest first."""
    with urllib.request.urlopen(f"{mailbox}/api/email", timeout=5) as reply:  # noqa: S310
        every: list[dict[str, Any]] = json.load(reply)
    wanted = address.lower()
    return [m for m in every if any(to["address"].lower() == wanted for to in m["to"])]


def wait_for_link(
    mailbox: str, address: str, action: str, *, seen: int = 0, timeout: float = 30
) -> tuple[dict[str, Any], str, str]:
    """The first mail to `address` after its first `seen` whose text links to `action`:
    (the mail, the link's page address, the token)."""

    def found() -> tuple[dict[str, Any], str, str] | None:
        for mail in mails_to(mailbox, address)[seen:]:
            for page, linked, token in MAIL_LINK.findall(mail.get("text") or ""):
                if linked == action:
                    return mail, page, token
        return None

    return wait_for(found, timeout=timeout, what=f"a {action} mail to {address}", interval=0.2)
