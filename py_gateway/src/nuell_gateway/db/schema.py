"""Migrations (`make migrate`) and the start-up check that the schema is current."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaBehindError(RuntimeError):
    """The database has not been migrated to what this code expects."""


def alembic_config(url: URL) -> Config:
    """Alembic configuration for `url` (psycopg 3 driver) with our scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # `%` would start an interpolation in Alembic's ConfigParser.
    config.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def upgrade_to_head(url: URL) -> None:
    """Apply every pending migration."""
    command.upgrade(alembic_config(url), "head")


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None
    return head


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Raise `SchemaBehindError` unless the database is at this code's head."""
    # Alembic announces its dialect at INFO on every check; that is migrate's business.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    async with engine.connect() as connection:
        current = await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    expected = head_revision()
    if current is not None and current not in {
        script.revision for script in scripts.walk_revisions()
    }:
        raise SchemaBehindError(
            f"database schema is at revision {current}, which this gateway does not know "
            f"(it needs {expected}): the database was migrated by a newer version"
        )
    if current != expected:
        raise SchemaBehindError(
            f"database schema is at revision {current or 'none'} but this gateway needs "
            f"{expected}: run `make migrate` (or `nuell-gateway migrate`) first"
        )
