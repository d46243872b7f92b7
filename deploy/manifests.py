"""Docker compose and Kubernetes manifests, from the same `StackSettings` as
the Envoy config (`render.py compose`, `render.py k8s`).

Nothing here holds a secret: database URLs, JWT keys, the PostgreSQL
password and the edge certificate are references (compose `secrets:`,
Kubernetes `secretKeyRef` and Secret volumes), filled in by whoever runs it.
"""

from __future__ import annotations

import copy
import hashlib
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.render import (
    COMPOSE_TLS_CERT,
    COMPOSE_TLS_KEY,
    COMPUTE_SERVICE,
    DEPLOY_DIR,
    GATEWAY_SERVICE,
    KUBERNETES_TLS_DIR,
    envoy_compose,
    envoy_kubernetes,
    render_envoy_context,
)
from deploy.settings import REPO, SettingsError, StackSettings

Manifest = dict[str, Any]

VERSION = "0.1.0"
GATEWAY_IMAGE = f"nuell/gateway:{VERSION}"
COMPUTE_IMAGE = f"nuell/compute:{VERSION}"
# The official image, at the version whose `envoy --mode validate` the tests run.
ENVOY_VERSION = "1.40.0"
ENVOY_IMAGE = f"envoyproxy/envoy:distroless-v{ENVOY_VERSION}"
POSTGRES_IMAGE = "postgres:17-bookworm"
POSTGRES_PORT = 5432
DNS_PORT = 53
# The distroless Envoy image's `nonroot` user; ours are created in the Dockerfiles.
APP_UID = 10001
ENVOY_UID = 65532
ENVOY_CONFIG_PATH = "/etc/envoy/envoy.yaml"

NAMESPACE = "nuell"
PART_OF = "nuell"
# The gateway's secrets: Secret `nuell-gateway`, keys below (never values here).
GATEWAY_SECRET = "nuell-gateway"  # noqa: S105 - a name, not a value
DATABASE_URL_KEY = "database-url"
JWT_KEYS_KEY = "jwt-keys"
EDGE_TLS_SECRET = "nuell-edge-tls"  # noqa: S105 - a name, not a value
# Compose secrets, one file each under `secrets/` next to the compose file.
COMPOSE_SECRETS = ("postgres_password", "database_url", "jwt_keys", "edge_tls_cert", "edge_tls_key")


def _envoy_command(config: str, workers: str) -> list[str]:
    return [
        "/usr/local/bin/envoy",
        "-c",
        config,
        # No hot restart: no shared memory, so a read-only root and no IPC are enough.
        "--disable-hot-restart",
        "--log-level",
        "info",
        # Envoy otherwise starts a thread per CPU of the node, not of its limit.
        "--concurrency",
        workers,
    ]


def _trace_export_env(settings: StackSettings) -> dict[str, str]:
    """The services export their spans to the collector Envoy's config names."""
    if settings.otlp_collector is None:
        return {}
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{settings.otlp_collector}"}


# ------------------------------------------------------------------ compose


def compose(settings: StackSettings, out_dir: Path) -> Manifest:
    """The compose project; paths are relative to `out_dir`, where it is written."""
    gateway_port = settings.gateway.port
    compute_port = settings.compute.port
    context = os.path.relpath(REPO, out_dir.resolve())
    hardening: Manifest = {
        "read_only": True,
        "tmpfs": ["/tmp"],  # noqa: S108 - a private tmpfs per container
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
    }
    ports = [f"{settings.edge_https.port}:{settings.edge_https.port}"]
    if settings.edge_plaintext:
        ports.insert(0, f"{settings.edge_http.port}:{settings.edge_http.port}")
    gateway_env = {
        "NUELL_GATEWAY_ADDR": f"0.0.0.0:{gateway_port}",
        "NUELL_COMPUTE_TARGET": f"{COMPUTE_SERVICE}:{compute_port}",
        # Read by the image's entrypoint from the mounted compose secrets.
        "DATABASE_URL_FILE": "/run/secrets/database_url",
        "NUELL_JWT_KEYS_FILE": "/run/secrets/jwt_keys",
        "NUELL_WORKERS": "${NUELL_WORKERS:-2}",
        **_trace_export_env(settings),
    }
    gateway_build = {"context": context, "dockerfile": "deploy/docker/gateway.Dockerfile"}
    return {
        "name": "nuell",
        "services": {
            "postgres": {
                "image": POSTGRES_IMAGE,
                "environment": {
                    "POSTGRES_USER": "nuell",
                    "POSTGRES_DB": "nuell",
                    "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
                },
                "secrets": ["postgres_password"],
                "volumes": ["postgres-data:/var/lib/postgresql/data"],
                "healthcheck": {
                    "test": ["CMD", "pg_isready", "-U", "nuell", "-d", "nuell"],
                    "interval": "5s",
                    "timeout": "3s",
                    "retries": 12,
                    "start_period": "10s",
                },
                "networks": ["backend"],
                "restart": "unless-stopped",
            },
            "migrate": {
                "image": GATEWAY_IMAGE,
                "build": gateway_build,
                "command": ["migrate"],
                "environment": {"DATABASE_URL_FILE": "/run/secrets/database_url"},
                "secrets": ["database_url"],
                "depends_on": {"postgres": {"condition": "service_healthy"}},
                "networks": ["backend"],
                "restart": "no",
                **hardening,
            },
            COMPUTE_SERVICE: {
                "image": COMPUTE_IMAGE,
                "build": {"context": context, "dockerfile": "deploy/docker/compute.Dockerfile"},
                "environment": {
                    "NUELL_COMPUTE_ADDR": f"0.0.0.0:{compute_port}",
                    "NUELL_COMPUTE_WORKERS": "${NUELL_COMPUTE_WORKERS:-2}",
                    **_trace_export_env(settings),
                },
                # The image has no gRPC client (see deploy/docker/README.md):
                # this checks that the port accepts connections.
                "healthcheck": {
                    "test": ["CMD", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{compute_port}"],
                    "interval": "5s",
                    "timeout": "3s",
                    "retries": 12,
                },
                "networks": ["backend"],
                "restart": "unless-stopped",
                **hardening,
            },
            GATEWAY_SERVICE: {
                "image": GATEWAY_IMAGE,
                "build": gateway_build,
                "command": ["serve"],
                "environment": gateway_env,
                "secrets": ["database_url", "jwt_keys"],
                "depends_on": {
                    "migrate": {"condition": "service_completed_successfully"},
                    COMPUTE_SERVICE: {"condition": "service_healthy"},
                },
                "networks": ["backend"],
                "restart": "unless-stopped",
                **hardening,
            },
            "envoy": {
                "image": ENVOY_IMAGE,
                "entrypoint": _envoy_command(ENVOY_CONFIG_PATH, "${NUELL_EDGE_WORKERS:-1}")[:1],
                "command": _envoy_command(ENVOY_CONFIG_PATH, "${NUELL_EDGE_WORKERS:-1}")[1:],
                "configs": [{"source": "envoy_config", "target": ENVOY_CONFIG_PATH}],
                "secrets": [
                    {"source": "edge_tls_cert", "target": COMPOSE_TLS_CERT.name},
                    {"source": "edge_tls_key", "target": COMPOSE_TLS_KEY.name},
                ],
                "user": f"{ENVOY_UID}:{ENVOY_UID}",
                "ports": ports,
                "depends_on": {GATEWAY_SERVICE: {"condition": "service_healthy"}},
                "networks": ["backend", "edge"],
                "restart": "unless-stopped",
                **hardening,
            },
        },
        "networks": {
            # Only Envoy is on a network with published ports; the rest talk privately.
            "backend": {"internal": True},
            "edge": {},
        },
        "volumes": {"postgres-data": {}},
        "configs": {"envoy_config": {"file": "./envoy.yaml"}},
        "secrets": {name: {"file": f"./secrets/{name}"} for name in COMPOSE_SECRETS},
    }


def write_compose(settings: StackSettings, out_dir: Path, *, make_secrets: bool = False) -> Path:
    """`docker-compose.yaml` and `envoy.yaml` in `out_dir` (and, asked to,
    development secrets under `out_dir/secrets/`, never overwritten)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "envoy.yaml").write_text(
        render_envoy_context(envoy_compose(settings)), encoding="utf-8"
    )
    target = out_dir / "docker-compose.yaml"
    target.write_text(_header("compose") + _dump(compose(settings, out_dir)), encoding="utf-8")
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
        "database_url": f"postgresql://nuell:{password}@postgres:{POSTGRES_PORT}/nuell",
        "jwt_keys": f"k1:{secrets.token_urlsafe(48)}",
    }
    for name, value in values.items():
        if not (folder / name).exists():
            (folder / name).write_text(value, encoding="utf-8")
    if not (folder / "edge_tls_cert").exists():
        tls = folder / "tls"
        subprocess.run(
            [sys.executable, str(DEPLOY_DIR / "local" / "dev_tls.py"), str(tls)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (folder / "edge_tls_cert").write_bytes((tls / "edge.crt").read_bytes())
        (folder / "edge_tls_key").write_bytes((tls / "edge.key").read_bytes())
    for name in COMPOSE_SECRETS:
        (folder / name).chmod(0o644)


# --------------------------------------------------------------- Kubernetes


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


PROD_ORIGINS = ("https://nue-japan.com",)
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
        cors_allowed_origins=PROD_ORIGINS,
    ),
}


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": PART_OF}


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component}


def _meta(name: str, component: str, **extra: Any) -> Manifest:
    return {"name": name, "namespace": NAMESPACE, "labels": _labels(component), **extra}


def _resources(size: Sizing) -> Manifest:
    return {
        "requests": {"cpu": f"{size.cpu_m}m", "memory": f"{size.memory_mib}Mi"},
        "limits": {"cpu": f"{size.cpu_m}m", "memory": f"{size.memory_mib}Mi"},
    }


def workers_for(size: Sizing) -> str:
    """One server process (or worker thread) per whole CPU of the limit."""
    return str(max(1, size.cpu_m // 1000))


def _container_security(uid: int) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(uid: int) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _grpc_probes(port: int, *, period: int) -> Manifest:
    """kubelet's own gRPC health client (grpc.health.v1, service "")."""
    probe = {"grpc": {"port": port, "service": ""}, "timeoutSeconds": 2}
    return {
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**probe, "periodSeconds": period, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
    }


def _tmp_volume() -> tuple[Manifest, Manifest]:
    return (
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
    )


def _deployment(
    component: str,
    size: Sizing,
    container: Manifest,
    *,
    uid: int,
    volumes: list[Manifest],
    annotations: dict[str, str] | None = None,
    grace_seconds: int = 30,
) -> Manifest:
    tmp, tmp_mount = _tmp_volume()
    container = {
        "name": component,
        "imagePullPolicy": "IfNotPresent",
        **container,
        "resources": _resources(size),
        "securityContext": _container_security(uid),
        "volumeMounts": [tmp_mount, *container.get("volumeMounts", [])],
    }
    template_meta: Manifest = {"labels": _labels(component)}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(component, component),
        "spec": {
            "replicas": size.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(component)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": template_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": grace_seconds,
                    "securityContext": _pod_security(uid),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector(component)},
                        }
                    ],
                    "containers": [container],
                    "volumes": [tmp, *volumes],
                },
            },
        },
    }


def _service(component: str, port: int, *, headless: bool = False, **spec: Any) -> Manifest:
    body: Manifest = {
        "selector": _selector(component),
        "ports": [{"name": "grpc", "port": port, "targetPort": port, "appProtocol": "grpc"}],
        **spec,
    }
    if headless:
        body["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(component, component),
        "spec": body,
    }


def _hpa(component: str, size: Sizing) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(component, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": component},
            "minReplicas": size.min_replicas,
            "maxReplicas": size.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def _pdb(component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(component, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(component)}},
    }


def _peer(component: str) -> Manifest:
    return {"podSelector": {"matchLabels": _selector(component)}}


def _tcp(port: int) -> Manifest:
    return {"protocol": "TCP", "port": port}


def _dns() -> Manifest:
    return {
        "to": [{"namespaceSelector": {}}],
        "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
    }


def _policy(name: str, component: str, **spec: Any) -> Manifest:
    types = [kind for kind, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in spec]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, component),
        "spec": {
            "podSelector": {"matchLabels": _selector(component)},
            "policyTypes": types,
            **spec,
        },
    }


def network_policies(settings: StackSettings) -> list[Manifest]:
    """Deny everything, then allow exactly: anyone → envoy (TLS), envoy →
    gateway, gateway → compute, gateway and migrations → PostgreSQL (a
    managed server outside the cluster: any address, its port only), and DNS;
    with trace export, envoy, gateway and compute → the collector's port."""
    gateway, compute = settings.gateway.port, settings.compute.port
    edge = settings.edge_https.port
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": NAMESPACE, "labels": _labels("nuell")},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    # With trace export, every hop also reaches the collector (wherever it
    # runs: its port only) and compute, which otherwise calls nothing, DNS.
    collector = settings.otlp_collector
    traces = [] if collector is None else [{"ports": [_tcp(collector.port)]}]
    compute_egress = [] if collector is None else [*traces, _dns()]
    return [
        deny,
        _policy("envoy", "envoy", ingress=[{"ports": [_tcp(edge)]}], egress=[
            {"to": [_peer(GATEWAY_SERVICE)], "ports": [_tcp(gateway)]},
            *traces,
            _dns(),
        ]),
        _policy(GATEWAY_SERVICE, GATEWAY_SERVICE, ingress=[
            {"from": [_peer("envoy")], "ports": [_tcp(gateway)]},
        ], egress=[
            {"to": [_peer(COMPUTE_SERVICE)], "ports": [_tcp(compute)]},
            {"ports": [_tcp(POSTGRES_PORT)]},
            *traces,
            _dns(),
        ]),
        _policy(COMPUTE_SERVICE, COMPUTE_SERVICE, ingress=[
            {"from": [_peer(GATEWAY_SERVICE)], "ports": [_tcp(compute)]},
        ], egress=compute_egress),
        _policy("migrate", "migrate", egress=[{"ports": [_tcp(POSTGRES_PORT)]}, _dns()]),
    ]  # fmt: skip


def _env_list(env: dict[str, str]) -> list[Manifest]:
    return [{"name": name, "value": value} for name, value in env.items()]


def _secret_env(name: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": GATEWAY_SECRET, "key": key}}}


def _envoy_config(settings: StackSettings, overlay: Overlay) -> str:
    return render_envoy_context(envoy_kubernetes(settings, overlay.cors_allowed_origins))


def _checksum(text: str) -> dict[str, str]:
    # A changed config changes the pod template, so Envoy rolls out with it.
    return {"nuell.dev/envoy-config-sha256": hashlib.sha256(text.encode()).hexdigest()}


def base_resources(settings: StackSettings) -> dict[str, list[Manifest]]:
    """`base/` as file name → objects; sized and configured as `BASE`."""
    for variable, address in (
        ("NUELL_GATEWAY_ADDR", settings.gateway),
        ("NUELL_COMPUTE_ADDR", settings.compute),
    ):
        if address.port == 0:
            raise SettingsError(f"{variable}: containers need a fixed port, not 0")
    gateway, compute = settings.gateway.port, settings.compute.port
    edge = settings.edge_https.port
    envoy_yaml = _envoy_config(settings, BASE)
    tls_mount = {"name": "edge-tls", "mountPath": str(KUBERNETES_TLS_DIR), "readOnly": True}
    config_mount = {
        "name": "envoy-config",
        "mountPath": ENVOY_CONFIG_PATH,
        "subPath": "envoy.yaml",
        "readOnly": True,
    }
    gateway_container = {
        "image": GATEWAY_IMAGE,
        "args": ["serve"],
        "ports": [{"name": "grpc", "containerPort": gateway}],
        "env": [
            {"name": "NUELL_GATEWAY_ADDR", "value": f"0.0.0.0:{gateway}"},
            {"name": "NUELL_COMPUTE_TARGET", "value": f"{COMPUTE_SERVICE}:{compute}"},
            {"name": "NUELL_WORKERS", "value": workers_for(BASE.gateway)},
            _secret_env("DATABASE_URL", DATABASE_URL_KEY),
            _secret_env("NUELL_JWT_KEYS", JWT_KEYS_KEY),
            *_env_list(_trace_export_env(settings)),
        ],
        **_grpc_probes(gateway, period=5),
    }
    compute_container = {
        "image": COMPUTE_IMAGE,
        "ports": [{"name": "grpc", "containerPort": compute}],
        "env": [
            {"name": "NUELL_COMPUTE_ADDR", "value": f"0.0.0.0:{compute}"},
            {"name": "NUELL_COMPUTE_WORKERS", "value": workers_for(BASE.compute)},
            *_env_list(_trace_export_env(settings)),
        ],
        **_grpc_probes(compute, period=5),
    }
    # kubelet's gRPC probe speaks plaintext only and Envoy serves TLS only
    # (admin stays on loopback), so Envoy is probed on its TCP port; it checks
    # the gateway itself with gRPC health (envoy.yaml, `health_checks`).
    tcp = {"tcpSocket": {"port": edge}, "timeoutSeconds": 2}
    envoy_container = {
        "image": ENVOY_IMAGE,
        "command": _envoy_command(ENVOY_CONFIG_PATH, workers_for(BASE.envoy)),
        "ports": [{"name": "https", "containerPort": edge}],
        "readinessProbe": {**tcp, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 3},
        "volumeMounts": [config_mount, tls_mount],
    }
    envoy_volumes = [
        {"name": "envoy-config", "configMap": {"name": "envoy"}},
        {"name": "edge-tls", "secret": {"secretName": EDGE_TLS_SECRET, "defaultMode": 0o440}},
    ]
    tmp, tmp_mount = _tmp_volume()
    migrate_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # Versioned: a Job is immutable, each release migrates once.
        "metadata": _meta(f"migrate-{VERSION.replace('.', '-')}", "migrate"),
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": _labels("migrate")},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(APP_UID),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": GATEWAY_IMAGE,
                            "args": ["migrate"],
                            "env": [_secret_env("DATABASE_URL", DATABASE_URL_KEY)],
                            "resources": _resources(Sizing(1, 1, 1, 500, 256)),
                            "securityContext": _container_security(APP_UID),
                            "volumeMounts": [tmp_mount],
                        }
                    ],
                    "volumes": [tmp],
                },
            },
        },
    }
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                **_labels("nuell"),
                # Every pod here must meet the `restricted` Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }
    return {
        "namespace.yaml": [namespace],
        "envoy-configmap.yaml": [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta("envoy", "envoy"),
                "data": {"envoy.yaml": envoy_yaml},
            }
        ],
        "compute.yaml": [
            _deployment(COMPUTE_SERVICE, BASE.compute, compute_container, uid=APP_UID, volumes=[]),
            _service(COMPUTE_SERVICE, compute),
            _hpa(COMPUTE_SERVICE, BASE.compute),
            _pdb(COMPUTE_SERVICE),
        ],
        "gateway.yaml": [
            _deployment(GATEWAY_SERVICE, BASE.gateway, gateway_container, uid=APP_UID, volumes=[]),
            # Headless: Envoy resolves every ready pod and balances per call.
            _service(GATEWAY_SERVICE, gateway, headless=True),
            _hpa(GATEWAY_SERVICE, BASE.gateway),
            _pdb(GATEWAY_SERVICE),
        ],
        "envoy.yaml": [
            _deployment(
                "envoy",
                BASE.envoy,
                envoy_container,
                uid=ENVOY_UID,
                volumes=envoy_volumes,
                annotations=_checksum(envoy_yaml),
            ),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta("envoy", "envoy"),
                "spec": {
                    "type": "LoadBalancer",
                    "externalTrafficPolicy": "Local",  # keeps the client address
                    "selector": _selector("envoy"),
                    "ports": [{"name": "https", "port": 443, "targetPort": edge}],
                },
            },
            _pdb("envoy"),
        ],
        "migrate-job.yaml": [migrate_job],
        "network-policies.yaml": network_policies(settings),
    }


def _sizing_patch(kind_component: str, size: Sizing, env: list[Manifest]) -> list[Manifest]:
    container: Manifest = {"name": kind_component, "resources": _resources(size)}
    if env:
        container["env"] = env
    patches: list[Manifest] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": kind_component, "namespace": NAMESPACE},
            "spec": {
                "replicas": size.replicas,
                "template": {"spec": {"containers": [container]}},
            },
        }
    ]
    if kind_component != "envoy":
        patches.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": kind_component, "namespace": NAMESPACE},
                "spec": {"minReplicas": size.min_replicas, "maxReplicas": size.max_replicas},
            }
        )
    return patches


def overlay_patches(settings: StackSettings, overlay: Overlay) -> list[Manifest]:
    """Strategic merge patches: what `overlay` changes in `base/`."""
    patches = [
        *_sizing_patch(
            GATEWAY_SERVICE,
            overlay.gateway,
            [{"name": "NUELL_WORKERS", "value": workers_for(overlay.gateway)}],
        ),
        *_sizing_patch(
            COMPUTE_SERVICE,
            overlay.compute,
            [{"name": "NUELL_COMPUTE_WORKERS", "value": workers_for(overlay.compute)}],
        ),
        *_sizing_patch("envoy", overlay.envoy, []),
    ]
    if workers_for(overlay.envoy) != workers_for(BASE.envoy):
        envoy_deployment = next(
            patch for patch in patches if _key(patch) == ("Deployment", "envoy")
        )
        envoy_deployment["spec"]["template"]["spec"]["containers"][0]["command"] = _envoy_command(
            ENVOY_CONFIG_PATH, workers_for(overlay.envoy)
        )
    envoy_yaml = _envoy_config(settings, overlay)
    if envoy_yaml != _envoy_config(settings, BASE):
        patches.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "envoy", "namespace": NAMESPACE},
                "data": {"envoy.yaml": envoy_yaml},
            }
        )
        envoy_deployment = next(
            patch for patch in patches if _key(patch) == ("Deployment", "envoy")
        )
        envoy_deployment["spec"]["template"]["metadata"] = {"annotations": _checksum(envoy_yaml)}
    return patches


def strategic_merge(target: Any, patch: Any) -> Any:
    """The part of Kubernetes' strategic merge these patches use: maps merge,
    lists of named items (containers, env) merge by `name`, others replace."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target[key], value) if key in target else value
        return merged
    if (
        isinstance(target, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in (*target, *patch))
    ):
        merged_list = list(target)
        names = [item["name"] for item in target]
        for item in patch:
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return copy.deepcopy(patch)


def _key(obj: Manifest) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def overlay_manifests(settings: StackSettings, overlay: Overlay) -> list[Manifest]:
    """The complete objects `kubectl apply -k overlays/<name>` creates."""
    objects = [obj for docs in base_resources(settings).values() for obj in docs]
    patches = {_key(patch): patch for patch in overlay_patches(settings, overlay)}
    result = [strategic_merge(obj, patches.pop(_key(obj), {})) for obj in objects]
    if patches:
        raise AssertionError(f"patches match nothing in base: {sorted(patches)}")
    return result


def write_kubernetes(settings: StackSettings, out_dir: Path) -> dict[str, Path]:
    """A kustomize tree (`base/`, `overlays/<name>/`) and, per overlay, the
    complete manifests it produces (`rendered/<name>.yaml`)."""
    base = out_dir / "base"
    base.mkdir(parents=True, exist_ok=True)
    files = base_resources(settings)
    for name, docs in files.items():
        (base / name).write_text(_header("kubernetes") + _dump_all(docs), encoding="utf-8")
    _write_kustomization(base / "kustomization.yaml", {"resources": list(files)})
    rendered: dict[str, Path] = {}
    for name, overlay in OVERLAYS.items():
        folder = out_dir / "overlays" / name
        folder.mkdir(parents=True, exist_ok=True)
        patches = overlay_patches(settings, overlay)
        patch_files = []
        for patch in patches:
            kind, obj = _key(patch)
            patch_file = f"{kind.lower()}-{obj}.yaml"
            (folder / patch_file).write_text(_dump(patch), encoding="utf-8")
            patch_files.append({"path": patch_file})
        _write_kustomization(
            folder / "kustomization.yaml", {"resources": ["../../base"], "patches": patch_files}
        )
        target = out_dir / "rendered" / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            _header("kubernetes") + _dump_all(overlay_manifests(settings, overlay)),
            encoding="utf-8",
        )
        rendered[name] = target
    return rendered


def _write_kustomization(path: Path, body: Manifest) -> None:
    document = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **body}
    path.write_text(_header("kubernetes") + _dump(document), encoding="utf-8")


def _header(target: str) -> str:
    return (
        f"# Nuell ({target}). Rendered by deploy/render.py from deploy/settings.py:\n"
        "# change those, not this file.\n"
    )


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(document: Manifest) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)


def _dump_all(documents: list[Manifest]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100)
