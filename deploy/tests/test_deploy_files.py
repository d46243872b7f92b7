"""Dockerfiles, docker compose and Kubernetes manifests: rendered from the
settings, validated by the real tools (hadolint, check-jsonschema's
compose-spec schema, kubernetes-validate, `envoy --mode validate`), and
checked for the properties that matter. No Docker engine or cluster needed.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import manifests, render
from deploy.dev_tls import ensure_dev_certificate
from deploy.settings import REPO, StackSettings
from deploy.tests.support import (
    DEPLOY_DIR,
    ENVOY,
    RENDER,
)

VENV_BIN = Path(sys.executable).parent
HADOLINT = VENV_BIN / "hadolint"
CHECK_JSONSCHEMA = VENV_BIN / "check-jsonschema"
KUBERNETES_VALIDATE = VENV_BIN / "kubernetes-validate"
KUBECTL = VENV_BIN / "kubectl"
DOCKER_DIR = DEPLOY_DIR / "docker"
DOCKERFILES = {
    "gateway": DOCKER_DIR / "gateway.Dockerfile",
    "compute": DOCKER_DIR / "compute.Dockerfile",
}
DEFAULTS = StackSettings()


def _tool(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"missing {path}: .venv/bin/pip install -e 'py_gateway[dev]'")
    return path


def _run(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"{args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert, _ = ensure_dev_certificate(tmp_path_factory.mktemp("tls"))
    return cert.cert, cert.key


def envoy_validates(config: str, tmp: Path, tls: tuple[Path, Path]) -> subprocess.CompletedProcess:
    """`envoy --mode validate`, with the container's certificate paths pointed
    at a real certificate (Envoy reads it even to validate): only paths change."""
    cert, key = tls
    for container_cert, container_key in (
        (manifests.COMPOSE_TLS_CERT, manifests.COMPOSE_TLS_KEY),
        (manifests.KUBERNETES_TLS_CERT, manifests.KUBERNETES_TLS_KEY),
    ):
        config = config.replace(f'"{container_cert}"', f'"{cert}"')
        config = config.replace(f'"{container_key}"', f'"{key}"')
    path = tmp / "envoy-validate.yaml"
    path.write_text(config, encoding="utf-8")
    return _run(ENVOY, "--mode", "validate", "-c", path, "--disable-hot-restart")


# ---------------------------------------------------------------- Dockerfiles


def _final_stage(dockerfile: Path) -> list[str]:
    lines = dockerfile.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return lines[starts[-1] :]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(name: str) -> None:
    result = _run(_tool(HADOLINT), DOCKERFILES[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install grpcio\n", encoding="utf-8")
    result = _run(_tool(HADOLINT), bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_run_as_a_numeric_non_root_user(name: str) -> None:
    stage = _final_stage(DOCKERFILES[name])
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, f"{name}: the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit()
    assert int(uid) == manifests.APP_UID


def test_images_expose_the_settings_ports() -> None:
    expected = {"gateway": DEFAULTS.gateway.port, "compute": DEFAULTS.compute.port}
    for name, port in expected.items():
        text = "\n".join(_final_stage(DOCKERFILES[name]))
        assert re.findall(r"^EXPOSE (\d+)$", text, re.M) == [str(port)], name
        assert f"0.0.0.0:{port}" in text, name


def test_gateway_healthcheck_is_grpc_health_and_compute_defers_to_probes() -> None:
    gateway = "\n".join(_final_stage(DOCKERFILES["gateway"]))
    assert "HEALTHCHECK" in gateway
    check = gateway[gateway.index("HEALTHCHECK") :]
    assert "HealthStub" in check
    assert "SERVING" in check
    compute = "\n".join(_final_stage(DOCKERFILES["compute"]))
    assert "HEALTHCHECK NONE" in compute


def test_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql://u:p@db/n\n", encoding="utf-8")
    script = DOCKER_DIR / "secret_env.py"
    env_cmd = [sys.executable, script, "env"]
    result = subprocess.run(
        env_cmd, env={"DATABASE_URL_FILE": str(secret)}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "DATABASE_URL=postgresql://u:p@db/n\n" in result.stdout
    assert "DATABASE_URL_FILE" not in result.stdout
    both = {"DATABASE_URL_FILE": str(secret), "DATABASE_URL": "x"}
    result = subprocess.run(env_cmd, env=both, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "not both" in result.stderr
    missing = {"NUELL_JWT_KEYS_FILE": str(tmp_path / "absent")}
    result = subprocess.run(env_cmd, env=missing, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "NUELL_JWT_KEYS_FILE" in result.stderr


# -------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compose")
    _run(*RENDER, "compose", "--out", out, "--secrets", check=True)
    return out


def _compose(compose_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((compose_dir / "docker-compose.yaml").read_text(encoding="utf-8"))


def test_compose_matches_the_compose_spec(compose_dir: Path) -> None:
    result = _run(
        _tool(CHECK_JSONSCHEMA),
        "--builtin-schema",
        "vendor.compose-spec",
        compose_dir / "docker-compose.yaml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_check_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yaml"
    bad.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      b: {condition: service_happy}\n",
        encoding="utf-8",
    )
    result = _run(_tool(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", bad)
    assert result.returncode != 0


def test_compose_start_order_and_ports(compose_dir: Path) -> None:
    services = _compose(compose_dir)["services"]
    assert set(services) == {"postgres", "migrate", "compute", "gateway", "envoy", "maildev"}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["gateway"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "compute": {"condition": "service_healthy"},
    }
    assert services["envoy"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["compute"]
    gateway_env = services["gateway"]["environment"]
    assert gateway_env["NUELL_GATEWAY_ADDR"] == f"0.0.0.0:{DEFAULTS.gateway.port}"
    assert gateway_env["NUELL_COMPUTE_TARGET"] == f"compute:{DEFAULTS.compute.port}"
    https = DEFAULTS.edge_https.port
    assert f"{https}:{https}" in services["envoy"]["ports"]
    # Only the edge publishes ports to the network (MailDev's inbox: this machine only);
    # the backend network is internal.
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert set(published) == {"envoy", "maildev"}
    assert published["maildev"] == [f"127.0.0.1:{DEFAULTS.mail_web.port}:1080"]
    assert gateway_env["NUELL_SMTP_URL_FILE"] == "/run/secrets/smtp_url"
    first_origin = DEFAULTS.cors_allowed_origins[0]
    assert gateway_env["NUELL_PUBLIC_URL"] == f"${{NUELL_PUBLIC_URL:-{first_origin}}}"
    assert "smtp_url" in services["gateway"]["secrets"]
    assert _compose(compose_dir)["networks"]["backend"] == {"internal": True}


def test_compose_containers_are_locked_down(compose_dir: Path) -> None:
    services = _compose(compose_dir)["services"]
    for name in ("migrate", "compute", "gateway", "envoy", "maildev"):
        assert services[name]["read_only"] is True, name
        assert services[name]["cap_drop"] == ["ALL"], name
    assert services["envoy"]["user"].split(":")[0] != "0"


def test_compose_envoy_config_validates(
    compose_dir: Path, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    config = (compose_dir / "envoy.yaml").read_text(encoding="utf-8")
    assert f'"gateway", port_value: {DEFAULTS.gateway.port}' in config
    assert "type: STRICT_DNS" in config
    result = envoy_validates(config, tmp_path, tls)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compose_holds_no_secret_value(compose_dir: Path) -> None:
    secrets_dir = compose_dir / "secrets"
    values = [
        (secrets_dir / name).read_text(encoding="utf-8").strip()
        for name in manifests.COMPOSE_SECRETS
    ]
    password = (secrets_dir / "postgres_password").read_text(encoding="utf-8")
    assert password in (secrets_dir / "database_url").read_text(encoding="utf-8")
    for rendered in ("docker-compose.yaml", "envoy.yaml"):
        text = (compose_dir / rendered).read_text(encoding="utf-8")
        for value in values:
            assert value not in text, rendered
        assert "PRIVATE KEY" not in text
    compose = _compose(compose_dir)
    for service in compose["services"].values():
        for key, value in service.get("environment", {}).items():
            assert not re.search(r"PASSWORD$|JWT_KEYS$|^DATABASE_URL$", key), key
            # No URL (they carry passwords) but the page's public address.
            assert "://" not in str(value) or key == "NUELL_PUBLIC_URL", key
    assert set(compose["secrets"]) == set(manifests.COMPOSE_SECRETS)
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"


# ----------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    _run(*RENDER, "k8s", "--out", out, check=True)
    return out


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _overlay(k8s_dir: Path, name: str) -> list[dict[str, Any]]:
    return _docs(k8s_dir / "rendered" / f"{name}.yaml")


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def test_every_manifest_passes_kubernetes_validate(k8s_dir: Path) -> None:
    files = [
        *(k8s_dir / "rendered").glob("*.yaml"),
        *(p for p in (k8s_dir / "base").glob("*.yaml") if p.name != "kustomization.yaml"),
    ]
    assert len(files) >= 9
    result = _run(_tool(KUBERNETES_VALIDATE), "--strict", "--no-warn", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_refuses_a_bad_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec: {replicas: many, selector: {}, template: {}}\n",
        encoding="utf-8",
    )
    assert _run(_tool(KUBERNETES_VALIDATE), "--strict", bad).returncode != 0


def test_overlays_are_what_kustomize_builds_of_the_tree(k8s_dir: Path) -> None:
    """rendered/<name>.yaml is exactly `kubectl kustomize overlays/<name>`: base plus patches."""
    base_kustomization = yaml.safe_load((k8s_dir / "base" / "kustomization.yaml").read_text())
    assert {p.name for p in (k8s_dir / "base").glob("*.yaml")} == {
        "kustomization.yaml",
        *base_kustomization["resources"],
    }
    for name in manifests.OVERLAYS:
        folder = k8s_dir / "overlays" / name
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kustomization["resources"] == ["../../base"]
        assert kustomization["patches"], name
        built = _run(_tool(KUBECTL), "kustomize", folder, check=True).stdout
        assert [d for d in yaml.safe_load_all(built) if d] == _overlay(k8s_dir, name), name


@pytest.mark.parametrize("overlay", sorted(manifests.OVERLAYS))
def test_pods_are_non_root_with_a_read_only_root(k8s_dir: Path, overlay: str) -> None:
    pods = _pod_specs(_overlay(k8s_dir, overlay))
    assert set(pods) == {"gateway", "compute", "envoy", "migrate-0-1-0"}
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["runAsUser"] > 0, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert resources["requests"]["cpu"], name
            assert resources["limits"]["cpu"] == resources["requests"]["cpu"], name
            assert resources["limits"]["memory"], name


@pytest.mark.parametrize("overlay", sorted(manifests.OVERLAYS))
def test_probes_are_grpc_health_on_the_settings_ports(k8s_dir: Path, overlay: str) -> None:
    pods = _pod_specs(_overlay(k8s_dir, overlay))
    for name, port in (("gateway", DEFAULTS.gateway.port), ("compute", DEFAULTS.compute.port)):
        (container,) = pods[name]["containers"]
        assert container["ports"] == [{"name": "grpc", "containerPort": port}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": ""}, (name, probe)
    (envoy,) = pods["envoy"]["containers"]
    # kubelet's gRPC probe is plaintext only and the edge is TLS only.
    for probe in ("readinessProbe", "livenessProbe"):
        assert envoy[probe]["tcpSocket"] == {"port": DEFAULTS.edge_https.port}


@pytest.mark.parametrize("overlay", sorted(manifests.OVERLAYS))
def test_workers_match_the_cpu_limit(k8s_dir: Path, overlay: str) -> None:
    pods = _pod_specs(_overlay(k8s_dir, overlay))
    for name, variable in (("gateway", "NUELL_WORKERS"), ("compute", "NUELL_COMPUTE_WORKERS")):
        (container,) = pods[name]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        cpu_m = int(container["resources"]["limits"]["cpu"].removesuffix("m"))
        assert int(env[variable]) == max(1, cpu_m // 1000), (name, overlay)
    (envoy,) = pods["envoy"]["containers"]
    cpu_m = int(envoy["resources"]["limits"]["cpu"].removesuffix("m"))
    threads = envoy["command"][envoy["command"].index("--concurrency") + 1]
    assert int(threads) == max(1, cpu_m // 1000), overlay


def _flows(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, int]]:
    """(direction, pod, peer, port) for every allowed flow; peer `*` is anyone."""
    flows = set()
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for policy in policies:
        spec = policy["spec"]
        pod = spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name", "*")
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction, []):
                peers = []
                for peer in rule.get(peers_key, [{}]):
                    if "podSelector" in peer:
                        peers.append(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                    else:
                        peers.append("*")
                for peer in peers:
                    for port in rule["ports"]:
                        flows.add((direction, pod, peer, port["port"]))
    return flows


# The flows between the services and to PostgreSQL, with or without traces.
_SERVICE_FLOWS = {
    ("ingress", "envoy", "*", DEFAULTS.edge_https.port),
    ("egress", "envoy", "gateway", DEFAULTS.gateway.port),
    ("ingress", "gateway", "envoy", DEFAULTS.gateway.port),
    ("egress", "gateway", "compute", DEFAULTS.compute.port),
    ("ingress", "compute", "gateway", DEFAULTS.compute.port),
    ("egress", "gateway", "*", manifests.POSTGRES_PORT),
    ("egress", "migrate", "*", manifests.POSTGRES_PORT),
}


def test_network_policies_allow_exactly_the_listed_flows(k8s_dir: Path) -> None:
    docs = _overlay(k8s_dir, "prod")
    deny = _find(docs, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = {(("egress", pod, "*", 53)) for pod in ("envoy", "gateway", "migrate")}
    assert _flows(docs) == {*_SERVICE_FLOWS, *dns}
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        if policy["metadata"]["name"] == "default-deny":
            continue
        for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
            # A policy type without rules means "deny"; rules without the type are ignored.
            assert (direction in spec) == (kind in spec["policyTypes"]), policy["metadata"]


def _envoy_config(docs: list[dict[str, Any]]) -> str:
    return _find(docs, "ConfigMap", "envoy")["data"]["envoy.yaml"]


def test_prod_edge_allows_only_the_production_origin(k8s_dir: Path) -> None:
    prod = _envoy_config(_overlay(k8s_dir, "prod"))
    dev = _envoy_config(_overlay(k8s_dir, "dev"))
    assert '"https://nue-japan.com"' in prod
    assert "localhost" not in prod
    for origin in DEFAULTS.cors_allowed_origins:
        assert f'"{origin}"' in dev
    assert "nue-japan.com" not in dev
    # Mailed links point at the page, the overlay's origin.
    for name, origin in (
        ("prod", "https://nue-japan.com"),
        ("dev", DEFAULTS.cors_allowed_origins[0]),
    ):
        env = _pod_specs(_overlay(k8s_dir, name))["gateway"]["containers"][0]["env"]
        assert {"name": "NUELL_PUBLIC_URL", "value": origin} in env
    # A new config rolls Envoy out: the pod template carries its checksum.
    for name in ("dev", "prod"):
        docs = _overlay(k8s_dir, name)
        annotations = _find(docs, "Deployment", "envoy")["spec"]["template"]["metadata"]
        digest = annotations["annotations"]["nuell.dev/envoy-config-sha256"]
        assert digest == hashlib.sha256(_envoy_config(docs).encode()).hexdigest()


@pytest.mark.parametrize("overlay", sorted(manifests.OVERLAYS))
def test_kubernetes_envoy_config_validates(
    k8s_dir: Path, overlay: str, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    config = _envoy_config(_overlay(k8s_dir, overlay))
    assert not re.search(r"name: edge_http$", config, re.M)  # TLS only
    assert str(manifests.KUBERNETES_TLS_CERT) in config
    assert f'"gateway", port_value: {DEFAULTS.gateway.port}' in config
    result = envoy_validates(config, tmp_path, tls)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_envoy_config_with_tracing_validates(
    target: str, tls: tuple[Path, Path], tmp_path: Path
) -> None:
    # A collector by service name, as it would run beside the stack.
    settings = StackSettings.from_env({"NUELL_OTLP_ENDPOINT": "http://otel-collector:4317"})
    config = render.render_envoy(settings, target=target)
    assert "envoy.tracers.opentelemetry" in config
    assert '"otel-collector", port_value: 4317' in config
    result = envoy_validates(config, tmp_path, tls)
    assert result.returncode == 0, result.stderr[-2000:]


def test_kubernetes_holds_no_secret_value(k8s_dir: Path) -> None:
    for path in k8s_dir.rglob("*.yaml"):
        for doc in _docs(path):
            assert doc["kind"] != "Secret", path
        text = path.read_text(encoding="utf-8")
        assert "PRIVATE KEY" not in text
        assert "postgresql://" not in text, path
    for name, pod in _pod_specs(_overlay(k8s_dir, "prod")).items():
        for container in pod["containers"]:
            for env in container.get("env", []):
                if env["name"] in ("DATABASE_URL", "NUELL_JWT_KEYS", "NUELL_SMTP_URL"):
                    assert "value" not in env, (name, env)
                    assert env["valueFrom"]["secretKeyRef"]["name"] == manifests.GATEWAY_SECRET
    gateway_env = _pod_specs(_overlay(k8s_dir, "prod"))["gateway"]["containers"][0]["env"]
    assert {"NUELL_SMTP_URL", "DATABASE_URL", "NUELL_JWT_KEYS"} <= {e["name"] for e in gateway_env}
    volumes = _pod_specs(_overlay(k8s_dir, "prod"))["envoy"]["volumes"]
    assert {"secretName": manifests.EDGE_TLS_SECRET, "defaultMode": 0o440} in [
        v.get("secret") for v in volumes
    ]


def test_scaling_objects_per_overlay(k8s_dir: Path) -> None:
    for name, overlay in manifests.OVERLAYS.items():
        docs = _overlay(k8s_dir, name)
        for component, size in (("gateway", overlay.gateway), ("compute", overlay.compute)):
            hpa = _find(docs, "HorizontalPodAutoscaler", component)
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
                size.min_replicas,
                size.max_replicas,
            )
            assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
            assert _find(docs, "Deployment", component)["spec"]["replicas"] == size.replicas
        for component in ("gateway", "compute", "envoy"):
            assert _find(docs, "PodDisruptionBudget", component)["spec"]["maxUnavailable"] == 1
    assert _find(_overlay(k8s_dir, "prod"), "Deployment", "gateway")["spec"]["replicas"] >= 2


def test_ports_follow_the_settings(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    env = {"NUELL_GATEWAY_ADDR": "127.0.0.1:6051", "NUELL_COMPUTE_ADDR": "127.0.0.1:6052"}
    settings = StackSettings.from_env(env)
    render.write_kubernetes(settings, tmp_path / "k8s")
    docs = _overlay(tmp_path / "k8s", "prod")
    assert _find(docs, "Service", "gateway")["spec"]["ports"][0]["port"] == 6051
    assert _find(docs, "Service", "compute")["spec"]["ports"][0]["port"] == 6052
    pods = _pod_specs(docs)
    assert pods["gateway"]["containers"][0]["readinessProbe"]["grpc"]["port"] == 6051
    assert pods["compute"]["containers"][0]["livenessProbe"]["grpc"]["port"] == 6052
    assert ("ingress", "compute", "gateway", 6052) in _flows(docs)
    assert '"gateway", port_value: 6051' in _envoy_config(docs)
    compose = yaml.safe_load(render.render_compose(settings, tmp_path))
    assert compose["services"]["gateway"]["environment"]["NUELL_COMPUTE_TARGET"] == "compute:6052"
    result = subprocess.run(
        [*RENDER, "k8s", "--out", str(tmp_path / "zero")],
        cwd=REPO,
        env={"NUELL_GATEWAY_ADDR": "0.0.0.0:0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("render: NUELL_GATEWAY_ADDR")


def test_envoy_image_matches_the_validating_binary() -> None:
    version = _run(ENVOY, "--version", check=True).stdout
    assert f"/{manifests.ENVOY_VERSION}/" in version
    assert manifests.ENVOY_IMAGE.endswith(manifests.ENVOY_VERSION)


def test_trace_export_reaches_every_hop_and_only_the_collector_port(tmp_path: Path) -> None:
    collector = "http://otel-collector.monitoring:4317"
    settings = StackSettings.from_env({"NUELL_OTLP_ENDPOINT": collector})
    render.write_kubernetes(settings, tmp_path / "k8s")
    base = tmp_path / "k8s" / "base"
    resources = {p.name: _docs(p) for p in base.glob("*.yaml") if p.name != "kustomization.yaml"}
    pods = _pod_specs([d for docs in resources.values() for d in docs])
    for name in ("gateway", "compute"):
        (container,) = pods[name]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector, name
    policies = manifests.network_policies(settings)
    dns = {("egress", pod, "*", 53) for pod in ("envoy", "gateway", "compute", "migrate")}
    assert _flows(policies) == {
        *_SERVICE_FLOWS,
        *{("egress", pod, "*", 4317) for pod in ("envoy", "gateway", "compute")},
        *dns,
    }
    files = []
    for name, docs in resources.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
        files.append(path)
    result = _run(_tool(KUBERNETES_VALIDATE), "--strict", "--no-warn", *files)
    assert result.returncode == 0, result.stdout + result.stderr

    compose = yaml.safe_load(render.render_compose(settings, tmp_path))
    for name in ("gateway", "compute"):
        assert compose["services"][name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == collector
    compose_file = tmp_path / "docker-compose.yaml"
    compose_file.write_text(yaml.safe_dump(compose), encoding="utf-8")
    result = _run(_tool(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", compose_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_trace_export_nothing_names_a_collector(k8s_dir: Path, compose_dir: Path) -> None:
    for path in [*k8s_dir.rglob("*.yaml"), compose_dir / "docker-compose.yaml"]:
        assert "OTEL_EXPORTER_OTLP" not in path.read_text(encoding="utf-8"), path
