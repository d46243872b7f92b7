"""Command line: `nuell-gateway [serve|migrate|create-admin]` (or `python -m nuell_gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from nuell_gateway.bootstrap import BootstrapError, create_admin
from nuell_gateway.config import Settings, load_settings
from nuell_gateway.db.engine import create_engine, unreachable_message
from nuell_gateway.db.schema import SchemaBehindError, ensure_schema_current, upgrade_to_head
from nuell_gateway.log import configure_logging
from nuell_gateway.resources import Resources
from nuell_gateway.server import StartupError
from nuell_gateway.workers import WorkerDiedError, serve

EXIT_REFUSED = 2


def _env_name(loc: object) -> str:
    """The variable behind a settings field (pydantic reports aliases as they are)."""
    field = str(loc)
    if field == "database_url":
        return "DATABASE_URL"
    return f"NUELL_{field.upper()}" if field in Settings.model_fields else field


def _describe(error: ValidationError) -> str:
    """One line naming each bad variable, never echoing its value (it may be secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        name = _env_name(item["loc"][0]) if item["loc"] else "settings"
        problems.append(f"{name}: {item['msg']}")
    return "configuration error: " + "; ".join(problems)


def _admin_password() -> str:
    password = os.environ.get("NUELL_BOOTSTRAP_ADMIN_PASSWORD")
    if password:
        return password
    if not sys.stdin.isatty():
        raise BootstrapError("set NUELL_BOOTSTRAP_ADMIN_PASSWORD (no terminal to ask on)")
    return getpass.getpass("password for the new admin: ")


async def _create_admin(settings: Settings, email: str) -> None:
    password = _admin_password()
    engine = create_engine(settings)
    await ensure_schema_current(engine)
    resources = Resources.build(settings, engine)
    try:
        user_id = await create_admin(resources, email=email, password=password)
    finally:
        await resources.close()
    print(f"created admin {email} ({user_id})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nuell-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    commands.add_parser("migrate", help="apply database migrations")
    admin = commands.add_parser(
        "create-admin",
        help="create an admin account (password from NUELL_BOOTSTRAP_ADMIN_PASSWORD or a prompt)",
    )
    admin.add_argument("--email", default=os.environ.get("NUELL_BOOTSTRAP_ADMIN_EMAIL"))
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(_describe(exc), file=sys.stderr)
        return EXIT_REFUSED
    configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            upgrade_to_head(settings.sqlalchemy_url)
        elif args.command == "create-admin":
            if not args.email:
                raise BootstrapError("give --email (or set NUELL_BOOTSTRAP_ADMIN_EMAIL)")
            asyncio.run(_create_admin(settings, args.email))
        else:
            serve(settings)
    except (StartupError, SchemaBehindError, BootstrapError) as exc:
        print(f"nuell-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except WorkerDiedError as exc:
        print(f"nuell-gateway: {exc}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        print(
            f"nuell-gateway: {unreachable_message(settings.sqlalchemy_url, exc)}", file=sys.stderr
        )
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
