"""Render deploy configuration from the one source of truth, `settings.py`.

    python -m deploy.render envoy --out .data/run/envoy.yaml   # target: local
    python -m deploy.render envoy [--target compose|kubernetes] # to stdout
    python -m deploy.render compose [--secrets]                # .data/run/compose/
    python -m deploy.render k8s                                # .data/run/k8s/

A target (`envoy_context`) says how the parts find each other: loopback
addresses on a machine, service names in compose and Kubernetes. The
Kubernetes tree (`kubernetes/`: base and overlays) is filled in from the
settings and each overlay built by kustomize (`kubectl kustomize`).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml  # type: ignore[import-untyped, unused-ignore]
from google.api import annotations_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import descriptor_pb2

from deploy import manifests
from deploy import settings as policy
from deploy.dev_tls import ensure_dev_certificate
from deploy.manifests import (
    COMPOSE_TLS_CERT,
    COMPOSE_TLS_KEY,
    GATEWAY_SERVICE,
    KUBERNETES_TLS_CERT,
    KUBERNETES_TLS_KEY,
)
from deploy.settings import REPO, Address, SettingsError, StackSettings

DEPLOY_DIR = Path(__file__).resolve().parent
# Where `compose` and `k8s` write by default (ignored by git, like all of .data/).
DEFAULT_OUT = REPO / ".data" / "run"
KUBECTL = Path(sys.executable).parent / "kubectl"


def edge_routes() -> list[tuple[str, str]]:
    """(method or service, its kind): single methods with a policy of their own
    first, then each service as a whole; Envoy takes the first route that matches."""
    kinds = {
        "rate_limited": policy.EDGE_RATE_LIMITED_METHODS,
        "retry": policy.EDGE_RETRYABLE_METHODS,
        "streaming": policy.EDGE_STREAMING_METHODS,
        "service": policy.EDGE_GRPC_SERVICES,
    }
    return [(name, kind) for kind, names in kinds.items() for name in names]


def _read_built(path: Path) -> bytes:
    """A file `make gen` writes from the contract."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(f"{path} is missing: run `make gen`") from None


def rest_transcoding(contract: Path = policy.BARE_CONTRACT) -> dict[str, Any]:
    """What the edge's REST/JSON transcoder needs: the contract (base64,
    inline, so the config stays one file; the bytes as protoc wrote them, so
    every render is identical) and the routed services that declare
    `google.api.http` paths."""
    raw = _read_built(contract)
    services = [
        f"{file.package}.{service.name}"
        for file in descriptor_pb2.FileDescriptorSet.FromString(raw).file
        for service in file.service
        if f"{file.package}.{service.name}" in policy.EDGE_GRPC_SERVICES
        and any(method.options.HasExtension(annotations_pb2.http) for method in service.method)
    ]
    return {"descriptor": base64.b64encode(raw).decode(), "services": sorted(services)}


def openapi_document(path: Path = policy.OPENAPI) -> str:
    """The REST API's OpenAPI document, compact, for the edge to serve at
    /openapi.json; its server is wherever it was fetched from."""
    doc = json.loads(_read_built(path))
    return json.dumps(doc | {"servers": [{"url": "/"}]}, ensure_ascii=False, separators=(",", ":"))


ENVOY_TARGETS = ("local", "compose", "kubernetes")


def envoy_context(settings: StackSettings, target: str = "local") -> dict[str, Any]:
    """The template's context: the same settings for every target; a target
    only says where the gateway and the certificate are, and whether plaintext
    is served. `local`: on this machine, as `make run` starts it. `compose`: the
    gateway by service name, the certificate from compose secrets. `kubernetes`:
    TLS only, the gateway's headless Service (DNS returns every ready pod, so
    Envoy balances calls, not connections), the certificate from a Secret."""
    plaintext = settings.edge_plaintext
    if target == "local":
        if settings.gateway.port == 0:
            raise SettingsError(
                "render the local Envoy config after the gateway has bound its port"
            )
        cert, key = settings.edge_tls_cert, settings.edge_tls_key
        gateway = Address(settings.gateway.connect_host, settings.gateway.port)
    elif target in ENVOY_TARGETS:
        gateway = Address(GATEWAY_SERVICE, manifests.fixed_ports(settings).gateway.port)
        cert, key = COMPOSE_TLS_CERT, COMPOSE_TLS_KEY
        if target == "kubernetes":
            plaintext, cert, key = False, KUBERNETES_TLS_CERT, KUBERNETES_TLS_KEY
    else:
        raise SettingsError(f"unknown target {target!r}; known: {', '.join(ENVOY_TARGETS)}")
    # The template reads the rest from the settings (`s`) and the edge policy.
    return {
        "target": target,
        "s": settings,
        "policy": policy,
        "listener": settings.edge_http if plaintext else None,  # None: TLS only
        "tls": {"cert": cert, "key": key},
        "gateway": gateway,
        "routes": edge_routes(),
        "rest": rest_transcoding(),
        "openapi": openapi_document(),
        "otlp_collector": settings.otlp_collector,
    }


_jinja = jinja2.Environment(
    loader=jinja2.FileSystemLoader(DEPLOY_DIR),
    undefined=jinja2.StrictUndefined,  # a missing value fails the render, not Envoy at runtime
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - YAML, not HTML; strings are quoted with `tojson`
)


def _render(template: str, **context: Any) -> str:
    return _jinja.get_template(template).render(**context)


def render_envoy(settings: StackSettings, *, target: str = "local") -> str:
    """The Envoy bootstrap YAML for `target`."""
    return _render("envoy/envoy.yaml.j2", envoy=envoy_context(settings, target))


def write_envoy(settings: StackSettings, out: Path, *, target: str = "local") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_envoy(settings, target=target), encoding="utf-8")
    return out


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Nuell. Rendered by deploy/render.py from deploy/settings.py: change those.\n"
    path.write_text(header + text, encoding="utf-8")
    return path


def _context(settings: StackSettings, size: manifests.Overlay) -> dict[str, Any]:
    return {
        "s": manifests.fixed_ports(settings),
        "m": manifests,
        "size": size,
        "workers": manifests.workers_for,
        "envoy_command": manifests.envoy_command,
        "trace_env": manifests.trace_env(settings),
    }


def render_compose(settings: StackSettings, out_dir: Path) -> str:
    context = os.path.relpath(REPO, out_dir.resolve())  # the build context, from the file
    return _render(
        "docker/docker-compose.yaml.j2", **_context(settings, manifests.BASE), context=context
    )


def write_compose(settings: StackSettings, out_dir: Path, *, make_secrets: bool = False) -> Path:
    """`docker-compose.yaml` and `envoy.yaml` in `out_dir` (and, asked to,
    development secrets under `out_dir/secrets/`, never overwritten)."""
    write_envoy(settings, out_dir / "envoy.yaml", target="compose")
    target = _write(out_dir / "docker-compose.yaml", render_compose(settings, out_dir))
    if make_secrets:
        make_compose_secrets(out_dir / "secrets")
    return target


def make_compose_secrets(folder: Path) -> None:
    """Random development secrets and a development certificate, once.

    The folder is 0700 (nobody else on the host can reach it); the files are
    0644 because compose bind-mounts them and the containers run as their
    own unprivileged users."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    password_file = folder / "postgres_password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    password = password_file.read_text(encoding="utf-8").strip()
    values = {
        "database_url": f"postgresql://nuell:{password}@postgres:{manifests.POSTGRES_PORT}/nuell",
        "jwt_keys": f"k1:{secrets.token_urlsafe(48)}",
        "totp_keys": f"t1:{secrets.token_urlsafe(48)}",
        "smtp_url": "smtp://maildev:1025",  # compose's MailDev; replace the file for real mail
    }
    for name, value in values.items():
        if not (folder / name).exists():
            (folder / name).write_text(value, encoding="utf-8")
    if not (folder / "edge_tls_cert").exists():
        made, _ = ensure_dev_certificate(folder / "tls")
        shutil.copyfile(made.cert, folder / "edge_tls_cert")
        shutil.copyfile(made.key, folder / "edge_tls_key")
    for name in manifests.COMPOSE_SECRETS:
        (folder / name).chmod(0o644)


def write_kubernetes(settings: StackSettings, out_dir: Path) -> dict[str, Path]:
    """The kustomize tree (`base/`, `overlays/<name>/`) filled in from the
    settings, and what kustomize builds of each overlay (`rendered/<name>.yaml`)."""
    tree = DEPLOY_DIR / "kubernetes"
    for name, overlay in (("base", manifests.BASE), *manifests.OVERLAYS.items()):
        origins = overlay.cors_allowed_origins or settings.cors_allowed_origins
        edge = dataclasses.replace(settings, cors_allowed_origins=origins)
        envoy_yaml = render_envoy(edge, target="kubernetes")
        # A changed config changes the pod template, so Envoy rolls out with it.
        digest = hashlib.sha256(envoy_yaml.encode()).hexdigest()
        context = _context(settings, overlay) | {
            "envoy_yaml": envoy_yaml,
            "envoy_rollout": {"nuell.dev/envoy-config-sha256": digest},
        }
        source, folder = (tree / "base", out_dir / "base")
        if name != "base":
            source, folder = (tree / "overlays", out_dir / "overlays" / name)
        for template in source.glob("*.j2"):
            _write(
                folder / template.stem, _render(str(template.relative_to(DEPLOY_DIR)), **context)
            )
        shutil.copyfile(source / "kustomization.yaml", folder / "kustomization.yaml")
    policies = yaml.safe_dump_all(manifests.network_policies(settings), sort_keys=False)
    _write(out_dir / "base" / "network-policies.yaml", policies)
    return {name: build_overlay(out_dir, name) for name in manifests.OVERLAYS}


def build_overlay(out_dir: Path, name: str) -> Path:
    """`kubectl kustomize overlays/<name>` into `rendered/<name>.yaml`."""
    if not KUBECTL.exists():
        raise SettingsError(f"{KUBECTL} missing: .venv/bin/pip install -e 'py_gateway[dev]'")
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(out_dir / "overlays" / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise SettingsError(f"kustomize could not build overlays/{name}: {built.stderr.strip()}")
    return _write(out_dir / "rendered" / f"{name}.yaml", built.stdout)


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
        if args.command == "envoy" and args.out is None:
            sys.stdout.write(render_envoy(settings, target=args.target))
        elif args.command == "envoy":
            write_envoy(settings, args.out, target=args.target)
        elif args.command == "compose":
            print(write_compose(settings, args.out, make_secrets=args.secrets))
        else:
            print(*write_kubernetes(settings, args.out).values(), sep="\n")
    except SettingsError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
