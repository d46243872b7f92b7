"""The stack's addresses, ports, upstreams and CORS allowlist, in one place.

Every deploy artefact (the Envoy config today; compose and Kubernetes
manifests later) and the local stack runner read these values, so they
cannot drift apart. Defaults are the documented ports; each one can be
overridden by an environment variable:

| variable                     | default                                      |
|------------------------------|----------------------------------------------|
| `NUELL_EDGE_HTTP_PORT`       | 8080 (Envoy, plaintext gRPC and gRPC-Web)    |
| `NUELL_EDGE_HTTPS_PORT`      | 8443 (Envoy, TLS; reserved)                  |
| `NUELL_EDGE_ADMIN_PORT`      | 9901 (Envoy admin, loopback only)            |
| `NUELL_GATEWAY_ADDR`         | 127.0.0.1:50051 (py_gateway)                 |
| `NUELL_COMPUTE_ADDR`         | 127.0.0.1:50052 (rust_compute)               |
| `NUELL_WEB_PORT`             | 3000 (browser page)                          |
| `NUELL_CORS_ALLOWED_ORIGINS` | http://localhost:<web>,http://127.0.0.1:<web> |

Values are checked once, here, and a bad one raises `SettingsError` whose
message names the variable, so callers can print it as the only line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# The edge's whole gRPC surface. Everything else (server reflection in
# particular) is answered by Envoy itself and never reaches a backend.
EDGE_GRPC_SERVICES: tuple[str, ...] = (
    "nuell.auth.v1.AuthService",
    "nuell.users.v1.UserService",
    "nuell.posts.v1.PostService",
    "nuell.compute.v1.ComputeService",
    "grpc.health.v1.Health",
)

CORS_ALLOW_METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
# What gRPC-Web clients send: the bearer token, the framing headers and the deadline.
CORS_ALLOW_HEADERS: tuple[str, ...] = (
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
)
# Without these a browser hides the status from the client library.
CORS_EXPOSE_HEADERS: tuple[str, ...] = ("grpc-status", "grpc-message", "grpc-status-details-bin")
# Chromium caps preflight caching at two hours; a longer value buys nothing.
CORS_MAX_AGE_SECONDS = 7200


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
    # Reserved for the TLS listener; nothing binds it yet.
    edge_https: Address = Address("0.0.0.0", 8443)
    # Loopback only: the admin API can drain or stop Envoy.
    edge_admin: Address = Address("127.0.0.1", 9901)
    gateway: Address = Address("127.0.0.1", 50051)
    compute: Address = Address("127.0.0.1", 50052)
    web: Address = Address("127.0.0.1", 3000)
    cors_allowed_origins: tuple[str, ...] = field(
        default=("http://localhost:3000", "http://127.0.0.1:3000")
    )

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.edge_admin.host).is_loopback:
            raise SettingsError(f"Envoy admin must stay on loopback, not {self.edge_admin.host}")
        named = {
            "NUELL_EDGE_HTTP_PORT": self.edge_http.port,
            "NUELL_EDGE_HTTPS_PORT": self.edge_https.port,
            "NUELL_EDGE_ADMIN_PORT": self.edge_admin.port,
            "NUELL_GATEWAY_ADDR": self.gateway.port,
            "NUELL_COMPUTE_ADDR": self.compute.port,
            "NUELL_WEB_PORT": self.web.port,
        }
        seen: dict[int, str] = {}
        for variable, port in named.items():
            if port == 0:  # "any free port" never collides
                continue
            if port in seen:
                raise SettingsError(f"{seen[port]} and {variable} both use port {port}")
            seen[port] = variable

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        """Defaults overridden by `environ` (the process environment if None)."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def port_of(variable: str, default: Address) -> Address:
            if not (text := env.get(variable, "").strip()):
                return default
            return Address(default.host, _port(text, variable=variable, allow_zero=False))

        def address_of(variable: str, default: Address) -> Address:
            if not (text := env.get(variable, "").strip()):
                return default
            return Address.parse(text, variable=variable, allow_port_zero=True)

        web = port_of("NUELL_WEB_PORT", defaults.web)
        origins_text = env.get("NUELL_CORS_ALLOWED_ORIGINS", "").strip()
        if origins_text:
            origins = _origins(origins_text)
        else:  # the browser page is the only default client, wherever it listens
            origins = (f"http://localhost:{web.port}", f"http://127.0.0.1:{web.port}")
        return cls(
            edge_http=port_of("NUELL_EDGE_HTTP_PORT", defaults.edge_http),
            edge_https=port_of("NUELL_EDGE_HTTPS_PORT", defaults.edge_https),
            edge_admin=port_of("NUELL_EDGE_ADMIN_PORT", defaults.edge_admin),
            gateway=address_of("NUELL_GATEWAY_ADDR", defaults.gateway),
            compute=address_of("NUELL_COMPUTE_ADDR", defaults.compute),
            web=web,
            cors_allowed_origins=origins,
        )


def _port(text: str, *, variable: str, allow_zero: bool) -> int:
    lowest = 0 if allow_zero else 1
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise SettingsError(f"{variable}: {text!r} is not a port number ({lowest}-65535)")
    return port


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
