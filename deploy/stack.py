"""The Nuell stack as data: one `Service` per process, built from `StackSettings`
as the Envoy, compose and Kubernetes renders are.

    migrate ─▶ py_gateway ─▶ envoy ─▶ web
    rust_compute ─┘

`services()` declares them for a machine (`make run`, the deploy tests,
`make bench`); `deploy/launcher.py` starts any subset of them, plus services
declared elsewhere. PostgreSQL is either `DATABASE_URL` or the embedded server
(`embedded_database`), which pg_ctl runs outside any process group of ours.
Adding a service is one more entry in `services()`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

from deploy.launcher import (
    LaunchError,
    Service,
    all_of,
    free_port,
    grpc_health,
    http_get,
    listening,
    shown,
)
from deploy.render import write_envoy
from deploy.settings import REPO, Address, StackSettings

WEB_DIST = REPO / "web" / "dist"
# Short graces keep Ctrl-C snappy; idle local servers drain at once anyway.
LOCAL_DEFAULTS = {"NUELL_SHUTDOWN_GRACE_SECONDS": "5", "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS": "5"}


COMPUTE_BIN = Path(
    os.environ.get("NUELL_COMPUTE_BIN")
    or REPO / "rust_compute" / "target" / "release" / "rust_compute"
)
ENVOY_BIN = Path(sys.executable).parent / "envoy"


def check_built() -> None:
    """What the stack runs exists: one line saying how to get the first thing missing."""
    if not (COMPUTE_BIN.is_file() and os.access(COMPUTE_BIN, os.X_OK)):
        raise LaunchError(
            f"rust_compute binary not found at {shown(COMPUTE_BIN)}; build it with "
            "`cargo build --release --manifest-path rust_compute/Cargo.toml`"
        )
    if not ENVOY_BIN.exists() or importlib.util.find_spec("nuell_gateway") is None:
        raise LaunchError(
            "envoy or py_gateway is not installed next to this Python; "
            "install them: .venv/bin/pip install -e 'py_gateway[dev]'"
        )
    if not (WEB_DIST / "index.html").is_file():
        raise LaunchError(
            f"the browser page is not built ({shown(WEB_DIST)}/index.html missing); "
            "build it with `make web` (or `npm --prefix web ci && npm --prefix web run build`)"
        )


def envoy_argv(config: Path, workers: int) -> list[str]:
    """How Envoy runs on a machine (the stack's edge, or a benchmark's own config)."""
    return [
        str(ENVOY_BIN),
        *("-c", str(config), "--log-level", "warning"),
        # No hot restart, so no shared memory: nothing to clash with other Envoys here.
        "--disable-hot-restart",
        *("--concurrency", str(workers)),
    ]


def with_fixed_ports(settings: StackSettings) -> StackSettings:
    """Port 0 ("any free port") chosen now, so every command and dependent
    knows the address before the start and a restart binds the same one."""
    fixed = {
        name: Address(address.host, free_port())
        for name in ("gateway", "compute", "gateway_metrics", "compute_metrics")
        if (address := getattr(settings, name)).port == 0
    }
    return dataclasses.replace(settings, **fixed)


def _grace(env: Mapping[str, str], variable: str) -> float:
    """A service's own shutdown grace plus a margin: when to stop waiting for it."""
    text = env.get(variable) or LOCAL_DEFAULTS[variable]
    try:
        return float(text) + 5
    except ValueError:
        raise LaunchError(f"{variable}={text!r} is not a number of seconds") from None


def services(
    settings: StackSettings,
    *,
    env: Mapping[str, str],
    database_url: str = "",
    only: Collection[str] = (),
) -> list[Service]:
    """The stack on this machine, as `settings` place it, started in this order.

    `env` is every process's base environment (the gateway's `NUELL_WORKERS`,
    log levels, ...); `database_url` is what migrations and the gateway use;
    `only` picks services by name (their dependencies outside it are taken as
    running). Ports must be fixed (`with_fixed_ports`)."""
    env = LOCAL_DEFAULTS | dict(env) | {"PYTHONUNBUFFERED": "1"}
    compute, gateway, edge = settings.compute, settings.gateway, settings.edge_http
    gateway_env = env | {
        "DATABASE_URL": database_url,
        "NUELL_GATEWAY_ADDR": str(gateway),
        "NUELL_METRICS_ADDR": str(settings.gateway_metrics),
        "NUELL_COMPUTE_TARGET": compute.connect_target,
    }
    envoy_config = settings.data_dir / "run" / "envoy.yaml"
    page = f"http://localhost:{settings.web.port}"
    if settings.edge_plaintext:
        page_edge = [
            "--edge-port",
            str(edge.port),
            "--edge-tls-port",
            str(settings.edge_https.port),
        ]
    else:
        tls_url = f"https://localhost:{settings.edge_https.port}"
        page_edge = ["--edge-port", str(settings.edge_https.port), "--edge-url", tls_url]
    declared = [
        Service(
            "migrate",
            (sys.executable, "-m", "nuell_gateway", "migrate"),
            gateway_env,
            oneshot=True,
            announce="applying migrations",
            stop_timeout=5,
        ),
        Service(
            "rust_compute",
            (str(COMPUTE_BIN), "--addr", str(compute)),
            env | {"NUELL_COMPUTE_METRICS_ADDR": str(settings.compute_metrics)},
            all_of(listening, grpc_health(compute.connect_target)),
            where=str(compute),
            stop_timeout=_grace(env, "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS"),
        ),
        Service(
            "py_gateway",
            (sys.executable, "-m", "nuell_gateway", "serve"),
            gateway_env,
            all_of(listening, grpc_health(gateway.connect_target)),
            after=("migrate", "rust_compute"),
            where=str(gateway),
            stop_timeout=_grace(env, "NUELL_SHUTDOWN_GRACE_SECONDS"),
        ),
        Service(
            "envoy",
            envoy_argv(envoy_config, settings.edge_workers),
            env,
            all_of(
                http_get(f"http://{settings.edge_admin.connect_target}/ready"),
                *([grpc_health(edge.connect_target)] if settings.edge_plaintext else []),
            ),
            after=("py_gateway",),
            where=str(edge if settings.edge_plaintext else settings.edge_https),
            prepare=lambda: write_envoy(settings, envoy_config),
            announce="starting Envoy",
        ),
        Service(
            "web",
            (
                *(sys.executable, "-m", "deploy.serve_web", "--root", str(WEB_DIST)),
                *("--host", settings.web.host, "--port", str(settings.web.port), *page_edge),
            ),
            env,
            all_of(listening, http_get(f"{page}/")),
            after=("envoy",),
            where=page,
            stop_timeout=5,
            announce="starting the browser page",
        ),
    ]
    return [service for service in declared if not only or service.name in only]


def embedded_database(data_dir: Path, log_path: Path) -> str:
    """Start (or join) the embedded PostgreSQL whose data stays in `data_dir`;
    it stops when this process exits. pgserver's own log goes to `log_path`."""
    from nuell_gateway.db.embedded import start_embedded_postgres

    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pgserver_logger = logging.getLogger("pgserver")
    pgserver_logger.addHandler(handler)
    pgserver_logger.setLevel(logging.INFO)
    pgserver_logger.propagate = False
    try:
        return start_embedded_postgres(data_dir)
    except Exception as exc:  # pgserver raises anything from initdb to psutil; its log says why
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LaunchError(
            f"embedded PostgreSQL did not start ({reason}); see {shown(log_path)} and "
            f"{shown(data_dir / 'log')}, or set DATABASE_URL to a server of your own"
        ) from None
