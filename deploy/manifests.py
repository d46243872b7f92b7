"""What the compose project and the Kubernetes tree are made of, as data:
images, users, names, sizes per overlay, the NetworkPolicies. The shapes
are templates (`docker/docker-compose.yaml.j2`, `kubernetes/`); render.py
fills them from `StackSettings` and kustomize builds the overlays.

Nothing here holds a secret: database URLs, JWT keys, the PostgreSQL
password and the edge certificate are references (compose `secrets:`,
Kubernetes `secretKeyRef` and Secret volumes), filled in by whoever runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.settings import SettingsError, StackSettings

Manifest = dict[str, Any]

VERSION = "0.1.0"
GATEWAY_IMAGE = f"nuell/gateway:{VERSION}"
COMPUTE_IMAGE = f"nuell/compute:{VERSION}"
# The official image, at the version whose `envoy --mode validate` the tests run.
ENVOY_VERSION = "1.40.0"
ENVOY_IMAGE = f"envoyproxy/envoy:distroless-v{ENVOY_VERSION}"
POSTGRES_IMAGE = "postgres:17-bookworm"
MAILDEV_IMAGE = "maildev/maildev:2.2.1"  # compose's development mail; `make run` uses npm's v3
POSTGRES_PORT = 5432
# The distroless Envoy image's `nonroot` user; ours are created in the Dockerfiles.
APP_UID = 10001
ENVOY_UID = 65532
ENVOY_CONFIG_PATH = "/etc/envoy/envoy.yaml"
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
# The gateway's secrets: Secret `nuell-gateway`, keys below (never values here).
GATEWAY_SECRET = "nuell-gateway"  # noqa: S105 - a name, not a value
DATABASE_URL_KEY = "database-url"
JWT_KEYS_KEY = "jwt-keys"
EDGE_TLS_SECRET = "nuell-edge-tls"  # noqa: S105 - a name, not a value
# Compose secrets, one file each under `secrets/` next to the compose file.
COMPOSE_SECRETS: tuple[str, ...] = (
    "postgres_password",
    "database_url",
    "jwt_keys",
    "totp_keys",
    "smtp_url",
    "edge_tls_cert",
    "edge_tls_key",
)


@dataclass(frozen=True)
class Sizing:
    """CPU in millicores, memory in MiB; limits equal requests for CPU-bound parts."""

    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_m: int
    memory_mib: int


@dataclass(frozen=True)
class Overlay:
    name: str
    gateway: Sizing
    compute: Sizing
    envoy: Sizing
    cors_allowed_origins: tuple[str, ...] | None  # None: the settings' allowlist
    migrate: Sizing = Sizing(1, 1, 1, 500, 256)


BASE = Overlay(
    "base",
    gateway=Sizing(2, 2, 6, 1000, 512),
    compute=Sizing(2, 2, 6, 1000, 256),
    envoy=Sizing(2, 2, 2, 500, 256),
    cors_allowed_origins=None,
)
OVERLAYS: dict[str, Overlay] = {
    "dev": Overlay(
        "dev",
        gateway=Sizing(1, 1, 2, 1000, 512),
        compute=Sizing(1, 1, 2, 1000, 256),
        envoy=Sizing(1, 1, 1, 250, 128),
        cors_allowed_origins=None,
    ),
    "prod": Overlay(
        "prod",
        gateway=Sizing(3, 3, 12, 2000, 1024),
        compute=Sizing(3, 3, 12, 2000, 512),
        envoy=Sizing(3, 3, 3, 1000, 512),
        cors_allowed_origins=("https://nue-japan.com",),
    ),
}


def workers_for(size: Sizing) -> str:
    """One server process (or worker thread) per whole CPU of the limit."""
    return str(max(1, size.cpu_m // 1000))


def envoy_command(workers: str) -> list[str]:
    """Envoy in a container: no hot restart, so no shared memory, and a
    read-only root and no IPC are enough; threads from the CPU limit, not the node."""
    config = ("-c", ENVOY_CONFIG_PATH, "--disable-hot-restart", "--log-level", "info")
    return ["/usr/local/bin/envoy", *config, "--concurrency", workers]


def trace_env(settings: StackSettings) -> dict[str, str]:
    """The services export their spans to the collector Envoy's config names."""
    if settings.otlp_collector is None:
        return {}
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{settings.otlp_collector}"}


def fixed_ports(settings: StackSettings) -> StackSettings:
    for variable, address in (
        ("NUELL_GATEWAY_ADDR", settings.gateway),
        ("NUELL_COMPUTE_ADDR", settings.compute),
    ):
        if address.port == 0:
            raise SettingsError(f"{variable}: containers need a fixed port, not 0")
    return settings


def _policy(component: str, **rules: list[Manifest]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": component, "namespace": "nuell", "labels": _labels(component)},
        "spec": {
            "podSelector": _peer(component)["podSelector"],
            # A policy type without rules denies; rules without their type are ignored.
            "policyTypes": [kind.capitalize() for kind in ("ingress", "egress") if kind in rules],
            **rules,
        },
    }


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "nuell"}


def _peer(component: str) -> Manifest:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": component}}}


def _tcp(port: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port}]


def network_policies(settings: StackSettings) -> list[Manifest]:
    """Deny everything, then allow exactly: anyone → envoy (TLS), envoy →
    gateway, gateway → compute, gateway and migrations → PostgreSQL (a
    managed server outside the cluster: any address, its port only), and DNS;
    with trace export, envoy, gateway and compute → the collector's port."""
    gateway, compute = settings.gateway.port, settings.compute.port
    dns = {
        "to": [{"namespaceSelector": {}}],
        "ports": [{"protocol": protocol, "port": 53} for protocol in ("UDP", "TCP")],
    }
    collector = settings.otlp_collector
    traces = [] if collector is None else [{"ports": _tcp(collector.port)}]
    deny = _policy("nuell")
    deny["metadata"]["name"] = "default-deny"
    deny["spec"] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    return [
        deny,
        _policy("envoy", ingress=[{"ports": _tcp(settings.edge_https.port)}], egress=[
            {"to": [_peer(GATEWAY_SERVICE)], "ports": _tcp(gateway)}, *traces, dns,
        ]),
        _policy(GATEWAY_SERVICE, ingress=[{"from": [_peer("envoy")], "ports": _tcp(gateway)}],
                egress=[{"to": [_peer(COMPUTE_SERVICE)], "ports": _tcp(compute)},
                        {"ports": _tcp(POSTGRES_PORT)}, *traces, dns]),
        # Compute calls nothing, unless it exports traces (to the collector, found by DNS).
        _policy(COMPUTE_SERVICE,
                ingress=[{"from": [_peer(GATEWAY_SERVICE)], "ports": _tcp(compute)}],
                egress=[*traces, dns] if traces else []),
        _policy("migrate", egress=[{"ports": _tcp(POSTGRES_PORT)}, dns]),
    ]  # fmt: skip
