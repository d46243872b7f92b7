"""Render deploy configuration from the one source of truth, `settings.py`.

    python deploy/render.py envoy --out .data/run/envoy.yaml   # target: local
    python deploy/render.py envoy                              # to stdout
    python deploy/render.py envoy --target kubernetes          # or compose
    python deploy/render.py compose [--secrets]                # .data/run/compose/
    python deploy/render.py k8s                                # .data/run/k8s/

A target says how the parts find each other (loopback addresses for the
local runner; service names for compose and Kubernetes).
Each target maps the same `StackSettings` to a template context, so adding
one is a new function in `ENVOY_TARGETS`, not a second copy of the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from deploy.settings import (
    CORS_ALLOW_HEADERS,
    CORS_ALLOW_METHODS,
    CORS_EXPOSE_HEADERS,
    CORS_MAX_AGE_SECONDS,
    EDGE_CONNECTION_IDLE_TIMEOUT_SECONDS,
    EDGE_GRPC_SERVICES,
    EDGE_MAX_REQUEST_HEADERS_KB,
    EDGE_RATE_LIMITED_METHODS,
    EDGE_REQUEST_IDLE_TIMEOUT_SECONDS,
    EDGE_RETRYABLE_METHODS,
    EDGE_SECURITY_HEADERS,
    EDGE_STREAM_IDLE_TIMEOUT_SECONDS,
    EDGE_STREAM_MAX_DURATION_SECONDS,
    EDGE_STREAMING_METHODS,
    EDGE_UNARY_TIMEOUT_SECONDS,
    Address,
    SettingsError,
    StackSettings,
)

DEPLOY_DIR = Path(__file__).resolve().parent
# Where `compose` and `k8s` write by default (ignored by git, like all of .data/).
DEFAULT_OUT = DEPLOY_DIR.parent / ".data" / "run"


@dataclass(frozen=True)
class Upstream:
    """An Envoy cluster: a name and where its one endpoint is."""

    name: str
    address: Address

    @property
    def discovery(self) -> str:
        # STATIC needs an IP literal; service names (compose, Kubernetes) need DNS.
        return "STATIC" if self.address.is_ip else "STRICT_DNS"


@dataclass(frozen=True)
class CorsPolicy:
    allowed_origins: tuple[str, ...]
    allow_methods: str
    allow_headers: str
    expose_headers: str
    max_age_seconds: int


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client address: `burst` calls at once, one more every `refill_ms`."""

    burst: int
    refill_ms: int


@dataclass(frozen=True)
class Route:
    """One route to the gateway. Exactly one of `path` and `prefix` is set."""

    name: str
    path: str | None = None
    prefix: str | None = None
    streaming: bool = False
    retry: bool = False
    rate_limited: bool = False


@dataclass(frozen=True)
class TlsListener:
    address: Address
    cert: Path
    key: Path


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_request_headers_kb: int
    unary_timeout_s: int
    stream_idle_timeout_s: int
    stream_max_duration_s: int
    request_idle_timeout_s: int
    connection_idle_timeout_s: int


@dataclass(frozen=True)
class EnvoyContext:
    """Everything the Envoy template needs, already resolved for one target."""

    target: str
    listener: Address | None  # plaintext; None where only TLS is served
    tls_listener: TlsListener
    admin: Address
    gateway: Upstream
    routes: tuple[Route, ...]
    cors: CorsPolicy
    auth_rate_limit: RateLimit
    security_headers: tuple[tuple[str, str], ...]
    limits: Limits
    trusted_proxy_hops: int
    # The OTLP/gRPC collector for Envoy's spans; None renders no tracing.
    otlp_collector: Upstream | None = None


def edge_routes() -> tuple[Route, ...]:
    """Single methods with a policy of their own first, then each service as a
    whole: Envoy takes the first route that matches."""
    return (
        *(Route(m, path=f"/{m}", rate_limited=True) for m in EDGE_RATE_LIMITED_METHODS),
        *(Route(m, path=f"/{m}", retry=True) for m in EDGE_RETRYABLE_METHODS),
        *(Route(m, path=f"/{m}", streaming=True) for m in EDGE_STREAMING_METHODS),
        *(Route(service, prefix=f"/{service}/") for service in EDGE_GRPC_SERVICES),
    )


def _cors(settings: StackSettings) -> CorsPolicy:
    return CorsPolicy(
        allowed_origins=settings.cors_allowed_origins,
        allow_methods=",".join(CORS_ALLOW_METHODS),
        allow_headers=",".join(CORS_ALLOW_HEADERS),
        expose_headers=",".join(CORS_EXPOSE_HEADERS),
        max_age_seconds=CORS_MAX_AGE_SECONDS,
    )


def _edge_context(
    settings: StackSettings,
    *,
    target: str,
    plaintext: bool,
    cert: Path,
    key: Path,
    gateway: Address,
    cors_allowed_origins: tuple[str, ...] | None = None,
) -> EnvoyContext:
    """The context every target shares; a target only says where things are."""
    origins = cors_allowed_origins or settings.cors_allowed_origins
    return EnvoyContext(
        target=target,
        listener=settings.edge_http if plaintext else None,
        tls_listener=TlsListener(settings.edge_https, cert, key),
        admin=settings.edge_admin,
        gateway=Upstream("py_gateway", gateway),
        routes=edge_routes(),
        cors=_cors(dataclasses.replace(settings, cors_allowed_origins=origins)),
        auth_rate_limit=RateLimit(settings.auth_burst, settings.auth_refill_interval_ms),
        security_headers=EDGE_SECURITY_HEADERS,
        limits=Limits(
            max_request_bytes=settings.max_request_bytes,
            max_request_headers_kb=EDGE_MAX_REQUEST_HEADERS_KB,
            unary_timeout_s=EDGE_UNARY_TIMEOUT_SECONDS,
            stream_idle_timeout_s=EDGE_STREAM_IDLE_TIMEOUT_SECONDS,
            stream_max_duration_s=EDGE_STREAM_MAX_DURATION_SECONDS,
            request_idle_timeout_s=EDGE_REQUEST_IDLE_TIMEOUT_SECONDS,
            connection_idle_timeout_s=EDGE_CONNECTION_IDLE_TIMEOUT_SECONDS,
        ),
        trusted_proxy_hops=settings.trusted_proxy_hops,
        otlp_collector=(
            Upstream("otlp_collector", settings.otlp_collector)
            if settings.otlp_collector is not None
            else None
        ),
    )


def envoy_local(settings: StackSettings) -> EnvoyContext:
    """Envoy on the same machine as the gateway, as `make run` starts it."""
    if settings.gateway.port == 0:
        raise SettingsError("render the local Envoy config after the gateway has bound its port")
    return _edge_context(
        settings,
        target="local",
        plaintext=settings.edge_plaintext,
        cert=settings.edge_tls_cert,
        key=settings.edge_tls_key,
        gateway=Address(settings.gateway.connect_host, settings.gateway.port),
    )


# Where the containers find the edge certificate: compose mounts its
# `secrets:` under /run/secrets, Kubernetes a `kubernetes.io/tls` Secret.
COMPOSE_TLS_CERT = Path("/run/secrets/edge_tls_cert")
COMPOSE_TLS_KEY = Path("/run/secrets/edge_tls_key")
KUBERNETES_TLS_DIR = Path("/etc/nuell/tls")
KUBERNETES_TLS_CERT = KUBERNETES_TLS_DIR / "tls.crt"
KUBERNETES_TLS_KEY = KUBERNETES_TLS_DIR / "tls.key"
# Service names: compose services and Kubernetes Services use the same ones.
GATEWAY_SERVICE = "gateway"
COMPUTE_SERVICE = "compute"


def _fixed_port(address: Address, variable: str) -> int:
    if address.port == 0:
        raise SettingsError(f"{variable}: containers need a fixed port, not 0")
    return address.port


def envoy_compose(settings: StackSettings) -> EnvoyContext:
    """Envoy in docker compose: the gateway by service name, the certificate
    from compose secrets; plaintext as configured (a developer's machine)."""
    port = _fixed_port(settings.gateway, "NUELL_GATEWAY_ADDR")
    return _edge_context(
        settings,
        target="compose",
        plaintext=settings.edge_plaintext,
        cert=COMPOSE_TLS_CERT,
        key=COMPOSE_TLS_KEY,
        gateway=Address(GATEWAY_SERVICE, port),
    )


def envoy_kubernetes(
    settings: StackSettings, cors_allowed_origins: tuple[str, ...] | None = None
) -> EnvoyContext:
    """Envoy in Kubernetes: TLS only, the gateway's headless Service (DNS
    returns every ready pod, so Envoy balances calls, not connections), the
    certificate from a mounted `kubernetes.io/tls` Secret."""
    port = _fixed_port(settings.gateway, "NUELL_GATEWAY_ADDR")
    return _edge_context(
        settings,
        target="kubernetes",
        plaintext=False,
        cert=KUBERNETES_TLS_CERT,
        key=KUBERNETES_TLS_KEY,
        gateway=Address(GATEWAY_SERVICE, port),
        cors_allowed_origins=cors_allowed_origins,
    )


ENVOY_TARGETS: dict[str, Callable[[StackSettings], EnvoyContext]] = {
    "local": envoy_local,
    "compose": envoy_compose,
    "kubernetes": envoy_kubernetes,
}

_jinja = jinja2.Environment(
    loader=jinja2.FileSystemLoader(DEPLOY_DIR),
    undefined=jinja2.StrictUndefined,  # a missing value fails the render, not Envoy at runtime
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - YAML, not HTML; strings are quoted with `tojson`
)


def render_envoy(settings: StackSettings, *, target: str = "local") -> str:
    """The Envoy bootstrap YAML for `target`."""
    try:
        make_context = ENVOY_TARGETS[target]
    except KeyError:
        raise SettingsError(
            f"unknown target {target!r}; known: {', '.join(ENVOY_TARGETS)}"
        ) from None
    return render_envoy_context(make_context(settings))


def render_envoy_context(context: EnvoyContext) -> str:
    """The Envoy bootstrap YAML for an already resolved context."""
    return _jinja.get_template("envoy/envoy.yaml.j2").render(envoy=context)


def write_envoy(settings: StackSettings, out: Path, *, target: str = "local") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_envoy(settings, target=target), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    envoy = commands.add_parser("envoy", help="the Envoy edge bootstrap config")
    envoy.add_argument("--target", choices=sorted(ENVOY_TARGETS), default="local")
    envoy.add_argument("--out", type=Path, help="file to write (default: stdout)")
    compose = commands.add_parser("compose", help="docker-compose.yaml and its envoy.yaml")
    compose.add_argument("--out", type=Path, default=DEFAULT_OUT / "compose", help="folder")
    compose.add_argument(
        "--secrets",
        action="store_true",
        help="also make development secrets under <out>/secrets (never overwritten)",
    )
    k8s = commands.add_parser("k8s", help="the kustomize tree and each overlay's manifests")
    k8s.add_argument("--out", type=Path, default=DEFAULT_OUT / "k8s", help="folder")
    args = parser.parse_args(argv)

    try:
        settings = StackSettings.from_env()
        if args.command == "envoy":
            if args.out is None:
                sys.stdout.write(render_envoy(settings, target=args.target))
            else:
                write_envoy(settings, args.out, target=args.target)
            return 0
        from deploy import manifests  # imports this module, so only here

        if args.command == "compose":
            print(manifests.write_compose(settings, args.out, make_secrets=args.secrets))
        else:
            for path in manifests.write_kubernetes(settings, args.out).values():
                print(path)
    except SettingsError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
