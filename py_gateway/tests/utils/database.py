"""Throwaway databases on the test PostgreSQL server."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from nuell_gateway.db.embedded import start_embedded_postgres


def scratch_dir() -> Path:
    """A folder for an embedded server that lives until this process exits.

    Not under pytest's tmp_path: pytest prunes old base folders when another
    run starts, which would pull the data out from under a live server. The
    embedded server deletes its data at exit; the empty folder goes after it
    (atexit runs in reverse order of registration).
    """
    folder = Path(tempfile.mkdtemp(prefix="nuell-test-db-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def server_url(scratch_dir: Path) -> URL:
    """The server tests use: TEST_DATABASE_URL, else DATABASE_URL, else an embedded one."""
    configured = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if configured:
        return make_url(configured)
    return make_url(start_embedded_postgres(scratch_dir / "postgres", delete_on_exit=True))


def libpq(url: URL) -> str:
    """`url` as psycopg wants it (no SQLAlchemy driver suffix)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def throwaway_database(server: URL, prefix: str = "nuell_test") -> Iterator[URL]:
    """Create an empty database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(libpq(server), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(database=name)
    finally:
        with psycopg.connect(libpq(server), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
