"""Run the whole Nuell stack on this machine (`make run`, `make migrate`).

    .venv/bin/python -m deploy.run_stack [--migrate-only] [--no-restart] ...

Checks what it can before starting anything, reaches or starts PostgreSQL,
starts `stack.services()` through the launcher, prints where each listens and
restarts a service that dies (deploy/README.md has the steps). Ctrl-C, SIGTERM
or SIGHUP stops them in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import secrets
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from deploy import stack
from deploy.dev_tls import ensure_dev_certificate
from deploy.launcher import (
    Launcher,
    LaunchError,
    RestartPolicy,
    Service,
    adopt_orphans,
    bind_error,
    shown,
)
from deploy.settings import SettingsError, StackSettings, number


def check_ports_free(services: list[Service]) -> None:
    problems = []
    for label, variable, address in (bound for service in services for bound in service.binds):
        if exc := bind_error(address.host, address.port):
            busy = exc.errno == errno.EADDRINUSE
            why = "is in use" if busy else f"cannot be bound ({exc.strerror})"
            problems.append(f"{address} ({label}, {variable}) {why}")
    if problems:
        raise LaunchError(
            "; ".join(problems) + ": stop whatever holds it (`ss -ltnp` shows who) "
            "or set the variable to a free port"
        )


def check_edge_certificate(settings: StackSettings) -> None:
    """A certificate of the user's own must exist; the development one is made later."""
    if settings.uses_dev_certificate:
        return
    for variable, path in (
        ("NUELL_EDGE_TLS_CERT", settings.edge_tls_cert),
        ("NUELL_EDGE_TLS_KEY", settings.edge_tls_key),
    ):
        if not path.is_file():
            raise LaunchError(f"{variable}={path}: no such file (a PEM file is needed)")


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_database(url: str) -> None:
    import psycopg

    # Drivers in the scheme (postgresql+psycopg://) are SQLAlchemy's, not libpq's.
    libpq_url = re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)
    try:
        with psycopg.connect(libpq_url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except (psycopg.Error, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LaunchError(
            f"cannot reach PostgreSQL at DATABASE_URL={redact(url)} ({reason}); "
            "start it, fix DATABASE_URL, or unset it to use the embedded server"
        ) from None


def local_key(secrets_dir: Path, name: str) -> str:
    """A key (`jwt_keys`, `totp_keys`) made for this machine on first run and
    kept, so tokens and second factors survive restarts; never a key written
    down in the repository."""
    path = secrets_dir / name
    if not path.exists():
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(f"local:{secrets.token_urlsafe(48)}\n")
    return path.read_text(encoding="utf-8").strip()


class DatabaseWatch:
    """The embedded PostgreSQL: pg_ctl started it, so it is no child to poll."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.process = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        self.lost = False

    def check(self) -> None:
        with contextlib.suppress(psutil.Error):
            if self.process.status() != psutil.STATUS_ZOMBIE:
                return
        self.lost = True
        raise LaunchError(
            f"the embedded PostgreSQL (pid {self.process.pid}) died; the runner does not restart "
            f"the database, so it stopped the stack. See {shown(self.pgdata / 'log')}, "
            "then `make run` again"
        )

    def settle(self, timeout: float = 10) -> None:
        """Wait until the dead server is gone, zombie included, so pgserver's own
        exit hook finds nothing to stop (and does not fail trying)."""
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.process.pid, os.WNOHANG)  # ours when the runner started it
        with contextlib.suppress(psutil.Error):
            self.process.wait(timeout)


# The restart policy's knobs: flag, variable, default, type, what it does.
RESTART_OPTIONS = (
    ("--max-restarts", "NUELL_MAX_RESTARTS", "5", int,
     "restarts of one service within the window; one more crash stops the stack"),
    ("--restart-window", "NUELL_RESTART_WINDOW_SECONDS", "60", float,
     "how far back crashes count"),
    ("--restart-backoff", "NUELL_RESTART_BACKOFF_SECONDS", "0.5", float,
     "wait before a first restart, doubled for each further crash in the window"),
    ("--restart-backoff-max", "NUELL_RESTART_BACKOFF_MAX_SECONDS", "8", float,
     "the longest wait"),
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the whole Nuell stack locally.")
    parser.add_argument(
        "--migrate-only",
        action="store_true",
        help="reach or start the database, apply migrations and exit (`make migrate`)",
    )
    restarts = parser.add_argument_group(
        "restarts",
        "A service (rust_compute, py_gateway, Envoy, the page server) that dies after the "
        "start is restarted on the same addresses. Each flag overrides its variable.",
    )
    restarts.add_argument(
        "--no-restart",
        action="store_true",
        help="stop the whole stack when a service dies (same as --max-restarts 0)",
    )
    for flag, variable, default, kind, text in RESTART_OPTIONS:
        metavar = "N" if kind is int else "SECONDS"
        help_text = f"{text} ({variable}, default {default})"
        restarts.add_argument(flag, type=kind, metavar=metavar, help=help_text)
    return parser.parse_args()


def restart_policy(args: argparse.Namespace, env: Mapping[str, str]) -> RestartPolicy:
    values = []
    for flag, variable, default, kind, _ in RESTART_OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        values.append(number(env, variable, default, kind) if value is None else value)
    policy = RestartPolicy(0 if args.no_restart else int(values[0]), *values[1:])
    for wrong, problem in (
        (policy.max_restarts < 0, "the restart limit (--max-restarts, NUELL_MAX_RESTARTS) "
         "is below 0"),
        (policy.window <= 0, "the restart window (--restart-window, NUELL_RESTART_WINDOW_SECONDS) "
         "must be above 0 s"),
        (not 0 <= policy.backoff <= policy.backoff_max, "the restart backoff (--restart-backoff, "
         "NUELL_RESTART_BACKOFF_SECONDS) must be between 0 s and its maximum "
         "(--restart-backoff-max, NUELL_RESTART_BACKOFF_MAX_SECONDS)"),
    ):  # fmt: skip
        if wrong:
            raise LaunchError(problem)
    return policy


def database(settings: StackSettings, launcher: Launcher) -> tuple[str, str]:
    """Reach or start PostgreSQL: its URL and how to show it."""
    if url := os.environ.get("DATABASE_URL"):
        check_database(url)
        return url, redact(url)
    print("starting embedded PostgreSQL", flush=True)
    pgdata = settings.data_dir / "postgres"
    # Ctrl-C reaches initdb and pg_ctl too: their failure is then no failure (see main).
    url = stack.embedded_database(pgdata, launcher.log_dir / "postgres.log")
    return url, f"embedded, data in {shown(pgdata)}"


def print_table(services: list[Service], database: str, logs: str) -> None:
    """Where each service serves, the page first (the reverse of the start order)."""
    print("\nNuell is running:")
    for label, where in (row for service in reversed(services) for row in service.shows):
        print(f"  {label:<22} {where}")
    print(f"  {'database':<22} {database}\n  {'logs':<22} {logs}")
    print("Ready. Press Ctrl-C to stop.", flush=True)


def start(
    settings: StackSettings, launcher: Launcher, url: str, *, migrate_only: bool
) -> list[Service]:
    env = dict(os.environ)
    for name in ("jwt_keys", "totp_keys"):
        if not env.get(f"NUELL_{name.upper()}"):
            env[f"NUELL_{name.upper()}"] = local_key(settings.data_dir / "secrets", name)
    if not migrate_only and settings.uses_dev_certificate:
        made, fresh = ensure_dev_certificate(settings.edge_tls_cert.parent)
        if fresh:
            print(f"made a development TLS certificate in {shown(made.cert.parent)}")
    services = stack.services(settings, env=env, database_url=url)
    launcher.start(*[s for s in services if s.name == "migrate" or not migrate_only])
    return services


def main() -> int:
    args = parse_args()
    try:
        settings = stack.with_fixed_ports(StackSettings.from_env())
        startup_timeout = number(os.environ, "NUELL_STARTUP_TIMEOUT_SECONDS", "60", float)
        policy = restart_policy(args, os.environ)
    except (SettingsError, LaunchError) as exc:
        print(f"run_stack: {exc}", file=sys.stderr)
        return 1

    launcher = Launcher(settings.data_dir / "logs", startup_timeout)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda _signum, _frame: launcher.stop_event.set())
    failure, watch, embedded = None, None, False
    try:
        if not args.migrate_only:
            stack.check_built()
            check_ports_free(stack.services(settings, env=os.environ))
            check_edge_certificate(settings)
        adopt_orphans()
        url, database_shown = database(settings, launcher)
        if embedded := not os.environ.get("DATABASE_URL"):
            with contextlib.suppress(Exception):  # no pid file, already gone: nothing to watch
                watch = DatabaseWatch(settings.data_dir / "postgres")
        services = start(settings, launcher, url, migrate_only=args.migrate_only)
        if args.migrate_only:
            print("migrations applied", flush=True)
        else:
            print_table(services, database_shown, shown(launcher.log_dir) + "/")
            launcher.watch(policy, watch.check if watch else lambda: None)
    except (LaunchError, SettingsError) as exc:
        if not launcher.stop_event.is_set():  # else it is our own shutdown racing the start
            failure = exc
    finally:
        launcher.stop()
        if watch is not None and watch.lost:
            watch.settle()
        elif embedded:  # its atexit hook stops it as we exit
            print("stopping embedded PostgreSQL", flush=True)
    if failure:
        # Last, so the cause is what stays on screen.
        print(f"run_stack: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
