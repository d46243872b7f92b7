"""Command line: `nuell-gateway [serve|migrate]` (also `python -m nuell_gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from nuell_gateway.config import Settings, load_settings
from nuell_gateway.db.engine import unreachable_message
from nuell_gateway.db.schema import SchemaBehindError, upgrade_to_head
from nuell_gateway.log import configure_logging
from nuell_gateway.server import StartupError, serve

EXIT_CONFIG = 2


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nuell-gateway", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve gRPC (default) or apply database migrations",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(_describe(exc), file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            upgrade_to_head(settings.sqlalchemy_url)
        else:
            asyncio.run(serve(settings))
    except (StartupError, SchemaBehindError) as exc:
        print(f"nuell-gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except DBAPIError as exc:
        print(
            f"nuell-gateway: {unreachable_message(settings.sqlalchemy_url, exc)}", file=sys.stderr
        )
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
