"""The stack's addresses, ports, upstreams and edge policy, in one place.

Every deploy artefact (the Envoy config, compose, Kubernetes) and every
process the launcher starts read these values, so they cannot drift apart.
Defaults are the documented ports, each overridable by an environment
variable (the table is in deploy/README.md). Values are checked once, here:
a bad one raises `SettingsError` whose message names the variable, so
callers can print it as the only line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy import dev_tls

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO / ".data"
# The contract as one descriptor set with comments (`make gen` writes it),
# which the OpenAPI document is made from, and without them, which the edge
# transcodes REST/JSON with.
CONTRACT = REPO / "build" / "contract.binpb"
BARE_CONTRACT = REPO / "build" / "contract-bare.binpb"
# The REST API's OpenAPI document (`make gen`: py_gateway's nuell_gateway.openapi).
OPENAPI = REPO / "build" / "openapi.json"

# The edge's whole gRPC surface. Everything else (server reflection in
# particular) is answered by Envoy itself and never reaches a backend.
EDGE_GRPC_SERVICES: tuple[str, ...] = (
    "nuell.auth.v1.AuthService",
    "nuell.users.v1.UserService",
    "nuell.posts.v1.PostService",
    "nuell.compute.v1.ComputeService",
    "nuell.sessions.v1.SessionService",
    "grpc.health.v1.Health",
)

CORS_ALLOW_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# What gRPC-Web and Connect clients send: the bearer token, the framing
# headers and the deadline.
CORS_ALLOW_HEADERS: tuple[str, ...] = (
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
)
# Without these a browser hides the status from the client library.
CORS_EXPOSE_HEADERS: tuple[str, ...] = ("grpc-status", "grpc-message", "grpc-status-details-bin")
# Chromium caps preflight caching at two hours; a longer value buys nothing.
CORS_MAX_AGE_SECONDS = 7200

# Methods are `package.Service/Method`, as in the gRPC path.
# Credential and mail endpoints: a token bucket per client address for each,
# so neither password guessing, account minting nor mail sending runs at
# machine speed. The gateway's own per-address mail throttle sits behind it.
EDGE_RATE_LIMITED_METHODS: tuple[str, ...] = (
    "nuell.auth.v1.AuthService/Login",
    "nuell.auth.v1.AuthService/Register",
    "nuell.auth.v1.AuthService/VerifyEmail",
    "nuell.auth.v1.AuthService/ResendVerification",
    "nuell.auth.v1.AuthService/RequestPasswordReset",
    "nuell.auth.v1.AuthService/ResetPassword",
    "nuell.auth.v1.AuthService/RequestEmailChange",
    "nuell.auth.v1.AuthService/ConfirmEmailChange",
    "nuell.auth.v1.AuthService/ChangePassword",
    "nuell.auth.v1.AuthService/VerifyMfa",
    "nuell.auth.v1.AuthService/EnrollTotp",
    "nuell.auth.v1.AuthService/ConfirmTotp",
    "nuell.auth.v1.AuthService/DisableTotp",
)
# Reads without side effects: the only calls the edge retries, so a retry can
# never create, change or delete anything twice.
EDGE_RETRYABLE_METHODS: tuple[str, ...] = (
    "nuell.users.v1.UserService/GetCurrentUser",
    "nuell.users.v1.UserService/GetUser",
    "nuell.users.v1.UserService/ListUsers",
    "nuell.posts.v1.PostService/GetPost",
    "nuell.posts.v1.PostService/ListPosts",
    "nuell.posts.v1.PostService/SearchPosts",
    "nuell.posts.v1.PostService/ListSimilarPosts",
    "nuell.sessions.v1.SessionService/ListSessions",
    "nuell.sessions.v1.SessionService/ListAuditEvents",
    "grpc.health.v1.Health/Check",
)
# Long-lived streams: no overall deadline and no request buffering, an idle
# timeout instead (WatchPosts' heartbeats keep it from firing). Every other
# method is unary.
EDGE_STREAMING_METHODS: tuple[str, ...] = (
    "nuell.compute.v1.ComputeService/AnalyzeStream",
    "nuell.posts.v1.PostService/WatchPosts",
    "grpc.health.v1.Health/Watch",
)

# A unary call's ceiling; a caller's shorter grpc-timeout wins.
EDGE_UNARY_TIMEOUT_SECONDS = 30
EDGE_STREAM_IDLE_TIMEOUT_SECONDS = 300
EDGE_STREAM_MAX_DURATION_SECONDS = 3600
# A request that sends nothing for this long is dropped (slow clients hold memory).
EDGE_REQUEST_IDLE_TIMEOUT_SECONDS = 60
# A keep-alive connection with no request open for this long is closed.
EDGE_CONNECTION_IDLE_TIMEOUT_SECONDS = 300
EDGE_MAX_REQUEST_HEADERS_KB = 32

# On every response of the edge, errors and preflights included. HSTS only
# counts over HTTPS (browsers ignore it on plain HTTP, RFC 6797 8.1), so
# sending it from the development listener too is harmless and keeps the
# two listeners identical. No `preload`: that is a commitment to make on
# purpose, for the production domain, not a default.
EDGE_SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    # API answers are data, never documents to render or frame.
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
)


class SettingsError(ValueError):
    """An environment variable holds a value the stack cannot use."""


@dataclass(frozen=True)
class Address:
    """A listen or connect address: an IP literal or a host name, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """Where a client on this machine reaches a server bound to this address."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def connect_target(self) -> str:
        return str(Address(self.connect_host, self.port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @classmethod
    def parse(cls, value: str, *, variable: str, allow_port_zero: bool) -> Address:
        """Parse `host:port` or `[v6]:port`; `variable` names the source in errors."""
        host, sep, port_text = value.strip().rpartition(":")
        if not sep or not host:
            raise SettingsError(f"{variable}={value!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise SettingsError(f"{variable}={value!r}: write IPv6 addresses as [ADDR]:PORT")
        return cls(host, _port(port_text, variable=variable, allow_zero=allow_port_zero))


@dataclass(frozen=True)
class StackSettings:
    """Where each part of the stack listens and whom the edge lets in."""

    edge_http: Address = Address("0.0.0.0", 8080)
    # Plaintext is for local development; a deployment behind real TLS turns it off.
    edge_plaintext: bool = True
    edge_https: Address = Address("0.0.0.0", 8443)
    edge_tls_cert: Path = DEFAULT_DATA_DIR / "tls" / "edge.crt"
    edge_tls_key: Path = DEFAULT_DATA_DIR / "tls" / "edge.key"
    # Loopback only: the admin API can drain or stop Envoy.
    edge_admin: Address = Address("127.0.0.1", 9901)
    gateway: Address = Address("127.0.0.1", 50051)
    compute: Address = Address("127.0.0.1", 50052)
    # Prometheus /metrics of each service; loopback, like the admin API.
    gateway_metrics: Address = Address("127.0.0.1", 9464)
    compute_metrics: Address = Address("127.0.0.1", 9465)
    web: Address = Address("127.0.0.1", 3000)
    cors_allowed_origins: tuple[str, ...] = field(
        default=("http://localhost:3000", "http://127.0.0.1:3000")
    )
    auth_rate_per_minute: int = 10
    auth_burst: int = 5
    max_request_bytes: int = 4 * 1024 * 1024
    trusted_proxy_hops: int = 0
    # Envoy's worker threads (`--concurrency`) where the runner starts it.
    # One proxies several times the calls a Python worker serves, and they
    # share the machine with the gateway's processes: one per two cores.
    edge_workers: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    data_dir: Path = DEFAULT_DATA_DIR
    # Where the edge sends its spans (OTLP/gRPC); None renders no tracing.
    otlp_collector: Address | None = None
    # Development mail (MailDev, `make run`): its SMTP, and its inbox and REST API.
    mail_smtp: Address = Address("127.0.0.1", 1025)
    mail_web: Address = Address("127.0.0.1", 1080)

    @property
    def auth_refill_interval_ms(self) -> int:
        """One token back every this many milliseconds: the per-minute rate, evenly spread."""
        return 60_000 // self.auth_rate_per_minute

    @property
    def uses_dev_certificate(self) -> bool:
        """True when the certificate is the runner's own, made on first use."""
        made = dev_tls.paths(self.data_dir / "tls")
        return (self.edge_tls_cert, self.edge_tls_key) == (made.cert, made.key)

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.edge_admin.host).is_loopback:
            raise SettingsError(f"Envoy admin must stay on loopback, not {self.edge_admin.host}")
        for variable, value, low, high in (
            # Envoy refills a token bucket at most every 50 ms.
            ("NUELL_EDGE_AUTH_RATE_PER_MINUTE", self.auth_rate_per_minute, 1, 1200),
            ("NUELL_EDGE_AUTH_BURST", self.auth_burst, 1, 10_000),
            ("NUELL_EDGE_MAX_REQUEST_BYTES", self.max_request_bytes, 1024, 64 * 1024 * 1024),
            ("NUELL_EDGE_WORKERS", self.edge_workers, 1, 256),
            ("NUELL_EDGE_TRUSTED_PROXY_HOPS", self.trusted_proxy_hops, 0, 10),
        ):
            if not low <= value <= high:
                raise SettingsError(f"{variable}: {value} is not in {low}-{high}")
        seen: dict[int, str] = {}
        for name, (variable, kind) in FROM_ENV.items():
            port = getattr(self, name).port if kind in ("port", "address") else 0
            if port == 0:  # "any free port" never collides
                continue
            if port in seen:
                raise SettingsError(f"{seen[port]} and {variable} both use port {port}")
            seen[port] = variable

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        """Defaults overridden by `environ` (the process environment if None)."""
        env = os.environ if environ is None else environ
        defaults, values = cls(), {}
        for name, (variable, kind) in FROM_ENV.items():
            if text := env.get(variable, "").strip():
                values[name] = _read(kind, text, variable, getattr(defaults, name))
        data_dir = values.setdefault("data_dir", defaults.data_dir)
        for name in ("edge_tls_cert", "edge_tls_key"):  # beside the data, unless named
            values.setdefault(name, data_dir / "tls" / getattr(defaults, name).name)
        web = values.get("web", defaults.web).port  # the browser page: the default client
        values.setdefault(
            "cors_allowed_origins", (f"http://localhost:{web}", f"http://127.0.0.1:{web}")
        )
        return cls(**values, otlp_collector=_otlp_collector(env))


def number(env: Mapping[str, str], variable: str, default: str, kind: type[float] = int) -> float:
    """`variable` as `kind` (int, or float: seconds), `default` when unset or empty."""
    text = env.get(variable, "").strip() or default
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number of seconds"
        raise SettingsError(f"{variable}={text!r} is not {what}") from None


def _port(text: str, *, variable: str, allow_zero: bool) -> int:
    lowest = 0 if allow_zero else 1
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise SettingsError(f"{variable}: {text!r} is not a port number ({lowest}-65535)")
    return port


FLAGS = {"1": True, "true": True, "yes": True, "on": True}
FLAGS |= {"0": False, "false": False, "no": False, "off": False}


def _read(kind: str, text: str, variable: str, default: Any) -> Any:
    """A variable's text as the setting it names (`kind` as in FROM_ENV)."""
    if kind == "port":  # the default's host, this port
        return Address(default.host, _port(text, variable=variable, allow_zero=False))
    if kind == "address":
        return Address.parse(text, variable=variable, allow_port_zero=True)
    if kind == "path":
        return Path(text).expanduser().resolve()
    if kind == "origins":
        return _origins(text)
    if kind == "flag" and text.lower() not in FLAGS:
        raise SettingsError(f"{variable}: {text!r} is not true or false")
    return FLAGS[text.lower()] if kind == "flag" else int(number({variable: text}, variable, ""))


# Each setting a variable names: field -> (variable, how its text is read).
FROM_ENV: dict[str, tuple[str, str]] = {
    "edge_http": ("NUELL_EDGE_HTTP_PORT", "port"),
    "edge_plaintext": ("NUELL_EDGE_PLAINTEXT", "flag"),
    "edge_https": ("NUELL_EDGE_HTTPS_PORT", "port"),
    "edge_tls_cert": ("NUELL_EDGE_TLS_CERT", "path"),
    "edge_tls_key": ("NUELL_EDGE_TLS_KEY", "path"),
    "edge_admin": ("NUELL_EDGE_ADMIN_PORT", "port"),
    "gateway": ("NUELL_GATEWAY_ADDR", "address"),
    "compute": ("NUELL_COMPUTE_ADDR", "address"),
    "gateway_metrics": ("NUELL_METRICS_ADDR", "address"),
    "compute_metrics": ("NUELL_COMPUTE_METRICS_ADDR", "address"),
    "web": ("NUELL_WEB_PORT", "port"),
    "cors_allowed_origins": ("NUELL_CORS_ALLOWED_ORIGINS", "origins"),
    "auth_rate_per_minute": ("NUELL_EDGE_AUTH_RATE_PER_MINUTE", "whole"),
    "auth_burst": ("NUELL_EDGE_AUTH_BURST", "whole"),
    "max_request_bytes": ("NUELL_EDGE_MAX_REQUEST_BYTES", "whole"),
    "trusted_proxy_hops": ("NUELL_EDGE_TRUSTED_PROXY_HOPS", "whole"),
    "edge_workers": ("NUELL_EDGE_WORKERS", "whole"),
    "data_dir": ("NUELL_DATA_DIR", "path"),
    "mail_smtp": ("NUELL_MAIL_SMTP_PORT", "port"),
    "mail_web": ("NUELL_MAIL_WEB_PORT", "port"),
}
# The edge's own variable first, then the standard ones the services read,
# so one setting turns tracing on at every hop.
OTLP_ENDPOINT_VARIABLES = (
    "NUELL_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def _otlp_collector(env: Mapping[str, str]) -> Address | None:
    """The OTLP/gRPC collector from `http://HOST:PORT` (or `HOST:PORT`), if one is set."""
    for variable in OTLP_ENDPOINT_VARIABLES:
        if text := env.get(variable, "").strip():
            break
    else:
        return None
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "http":
        # A collector next to the edge (agent, sidecar) is reached in plaintext.
        raise SettingsError(f"{variable}={text!r}: the edge sends spans to an http:// collector")
    address = (rest if sep else text).removesuffix("/")
    return Address.parse(address, variable=variable, allow_port_zero=False)


def _origins(text: str) -> tuple[str, ...]:
    """Exact origins only: a wildcard would turn the allowlist into an open door."""
    origins: list[str] = []
    for raw in text.split(","):
        if not (item := raw.strip()):
            continue
        # Browsers send the origin without a trailing slash; forgive pasting one.
        origin = item.removesuffix("/").lower()
        if not _is_origin(origin):
            raise SettingsError(
                f"NUELL_CORS_ALLOWED_ORIGINS: {item!r} is not an origin "
                "(scheme://host[:port], e.g. https://nue-japan.com; no wildcards or paths)"
            )
        if origin not in origins:
            origins.append(origin)
    if not origins:
        raise SettingsError("NUELL_CORS_ALLOWED_ORIGINS is set but lists no origin")
    return tuple(origins)


def _is_origin(text: str) -> bool:
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - only to reject a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "*" not in text
        and not (parts.path or parts.query or parts.fragment)
        and parts.username is None
    )
