"""Helpers for the deploy tests: real binaries, free ports, polling, processes.

Fixtures built on these live in conftest.py; tests import the plain
functions from here.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from render import write_envoy
from settings import StackSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO / "deploy"
RUNNER = DEPLOY_DIR / "local" / "run_stack.py"
RENDER = DEPLOY_DIR / "render.py"
GATEWAY_SRC = REPO / "py_gateway" / "src"
VENV_BIN = Path(sys.executable).parent
ENVOY = VENV_BIN / "envoy"
GRPCURL = VENV_BIN / "grpcurl"
COMPUTE_BIN = Path(
    os.environ.get("NUELL_COMPUTE_BIN")
    or REPO / "rust_compute" / "target" / "release" / "rust_compute"
)
LISTENING = re.compile(
    r"^(?:rust_compute|nuell_gateway|nuell_web) listening on (\S+)\s*$", re.MULTILINE
)
SERVE_WEB = DEPLOY_DIR / "local" / "serve_web.py"
WEB_DIR = REPO / "web"

# Generous: two cores, and a cargo build may be running next to the tests.
START_TIMEOUT = float(os.environ.get("NUELL_TEST_START_TIMEOUT_SECONDS", "90"))

# Fresh per session: nothing outside the tests can mint a token they accept.
TEST_JWT_KEYS = f"deploy-tests:{secrets.token_urlsafe(48)}"

T = TypeVar("T")

_handed_out: set[int] = set()


# Below Linux's ephemeral range (32768-60999): a port the kernel would pick
# for bind(0) may be taken as the local port of any outgoing connection (to
# PostgreSQL, a health check) before the stack binds it, and the runner then
# rightly refuses it as in use.
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port nothing uses now, outside the ephemeral range, not handed out before."""
    while True:
        port = _PORTS[secrets.randbelow(len(_PORTS))]
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if result := probe():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """A child process whose stdout and stderr go to one log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_output(
        self, pattern: re.Pattern[str], *, timeout: float = START_TIMEOUT
    ) -> re.Match[str]:
        """The first match of `pattern` in the output; fails early if the process exits."""

        def matched() -> re.Match[str] | None:
            if match := pattern.search(self.output()):
                return match
            if (code := self.popen.poll()) is not None:
                raise AssertionError(
                    f"{self.name} exited with {code} before printing "
                    f"{pattern.pattern!r}; its output:\n{self.tail()}"
                )
            return None

        try:
            return wait_for(matched, timeout=timeout, what=f"{self.name}: {pattern.pattern!r}")
        except AssertionError as exc:
            if "timed out" in str(exc):
                raise AssertionError(f"{exc}; its output:\n{self.tail()}") from None
            raise

    def listening_on(self) -> str:
        """The `ip:port` from the process's `... listening on` line."""
        return self.wait_for_output(LISTENING).group(1)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout:.0f} s; its output:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM its process group, then SIGKILL if it lingers."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        except ProcessLookupError:
            self.popen.wait()


@dataclass
class ProcessGroup:
    """Starts processes (each in its own session) and stops them all, newest first."""

    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str | Path], env: Mapping[str, str] | None = None
    ) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
                cwd=REPO,
                start_new_session=True,  # signals we send reach it and its children only
            )
        proc = Proc(name, popen, log_path)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def base_env(**overrides: str) -> dict[str, str]:
    """The environment for a stack process: no inherited Nuell settings or databases."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("NUELL_") and key not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    if importlib.util.find_spec("nuell_gateway") is None:  # not installed yet: use the source
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GATEWAY_SRC), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["NUELL_JWT_KEYS"] = TEST_JWT_KEYS
    # Services run side by side here (the session's, the runner's): each
    # serves its metrics on a port of its own, not the default.
    env["NUELL_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
    env["NUELL_COMPUTE_METRICS_ADDR"] = "127.0.0.1:0"
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


@dataclass(frozen=True)
class Backend:
    """rust_compute and py_gateway as the session fixture started them."""

    compute: str  # ip:port
    gateway: str
    database_url: str


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
    proc: Proc

    @property
    def http_port(self) -> int:
        return self.settings.edge_http.port

    @property
    def https_port(self) -> int:
        return self.settings.edge_https.port

    @property
    def admin_port(self) -> int:
        return self.settings.edge_admin.port

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


def start_envoy(group: ProcessGroup, settings: StackSettings, config_dir: Path, name: str) -> Edge:
    """Envoy with the config rendered from `settings`, waited on until /ready."""
    config = write_envoy(settings, config_dir / f"{name}.yaml")
    proc = group.start(
        name, [ENVOY, "-c", config, "--disable-hot-restart", "--log-level", "warning"]
    )
    admin_port = settings.edge_admin.port
    wait_for(
        lambda: envoy_ready(admin_port) or proc.popen.poll() is not None,
        timeout=60,
        what=f"{name} /ready",
    )
    assert proc.popen.poll() is None, proc.tail()
    return Edge(settings, proc)


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
