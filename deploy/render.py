"""Render deploy configuration from the one source of truth, `settings.py`.

    python deploy/render.py envoy --out .data/run/envoy.yaml   # target: local
    python deploy/render.py envoy                              # to stdout

A target says how the parts find each other (loopback addresses for the
local runner; service names for compose and Kubernetes, once they exist).
Each target maps the same `StackSettings` to a template context, so adding
one is a new function in `ENVOY_TARGETS`, not a second copy of the config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from settings import (
    CORS_ALLOW_HEADERS,
    CORS_ALLOW_METHODS,
    CORS_EXPOSE_HEADERS,
    CORS_MAX_AGE_SECONDS,
    EDGE_GRPC_SERVICES,
    Address,
    SettingsError,
    StackSettings,
)

DEPLOY_DIR = Path(__file__).resolve().parent


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
class EnvoyContext:
    """Everything the Envoy template needs, already resolved for one target."""

    target: str
    listener: Address
    tls_listener: Address
    admin: Address
    gateway: Upstream
    routed_services: tuple[str, ...]
    cors: CorsPolicy


def _cors(settings: StackSettings) -> CorsPolicy:
    return CorsPolicy(
        allowed_origins=settings.cors_allowed_origins,
        allow_methods=",".join(CORS_ALLOW_METHODS),
        allow_headers=",".join(CORS_ALLOW_HEADERS),
        expose_headers=",".join(CORS_EXPOSE_HEADERS),
        max_age_seconds=CORS_MAX_AGE_SECONDS,
    )


def envoy_local(settings: StackSettings) -> EnvoyContext:
    """Envoy on the same machine as the gateway, as `make run` starts it."""
    if settings.gateway.port == 0:
        raise SettingsError("render the local Envoy config after the gateway has bound its port")
    return EnvoyContext(
        target="local",
        listener=settings.edge_http,
        tls_listener=settings.edge_https,
        admin=settings.edge_admin,
        gateway=Upstream(
            "py_gateway", Address(settings.gateway.connect_host, settings.gateway.port)
        ),
        routed_services=EDGE_GRPC_SERVICES,
        cors=_cors(settings),
    )


ENVOY_TARGETS: dict[str, Callable[[StackSettings], EnvoyContext]] = {"local": envoy_local}

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
        context = ENVOY_TARGETS[target](settings)
    except KeyError:
        raise SettingsError(
            f"unknown target {target!r}; known: {', '.join(ENVOY_TARGETS)}"
        ) from None
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
    args = parser.parse_args(argv)

    try:
        settings = StackSettings.from_env()
        if args.out is None:
            sys.stdout.write(render_envoy(settings, target=args.target))
        else:
            write_envoy(settings, args.out, target=args.target)
    except SettingsError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
