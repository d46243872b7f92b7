"""JSON log lines on stderr, one object per line.

Fields passed through `extra=` become keys of the object. Nothing secret is
ever passed: settings hold secrets as `SecretStr`, and request bodies are
never logged. Exceptions are logged as their stack and type, never their
message: messages quote data (PostgreSQL's DETAIL prints the failing row,
SQLAlchemy the statement's parameters, a ValueError the value it refused),
and a log line must not carry a user's content, a token or a password.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from nuell_gateway.request_id import CallIdentityFilter

# Attributes every LogRecord has; anything else came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        """The chain's frames and types, innermost cause first, without any message."""
        chain: list[BaseException] = []
        exc = ei[1]
        while exc is not None and exc not in chain:
            chain.append(exc)
            exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        return "\n".join(
            "Traceback (most recent call last):\n"
            + "".join(traceback.format_list(traceback.extract_tb(link.__traceback__)))
            + describe_exception(link)
            for link in reversed(chain)
        )


def describe_exception(exc: BaseException) -> str:
    """What a log may say about `exc`: its type and, for database errors,
    which rule failed (SQLSTATE, constraint, table, column), never a value."""
    kind = type(exc)
    text = f"{kind.__module__}.{kind.__qualname__}"
    diag = getattr(exc, "diag", None)
    if diag is not None:
        fields = {
            "sqlstate": getattr(exc, "sqlstate", None),
            "constraint": diag.constraint_name,
            "table": diag.table_name,
            "column": diag.column_name,
        }
        text += "".join(f" {key}={value}" for key, value in fields.items() if value)
    if isinstance(exc, BaseExceptionGroup):
        text += " [" + ", ".join(describe_exception(inner) for inner in exc.exceptions) + "]"
    return text


def configure_logging(level: str) -> None:
    """Route every logger to stderr as JSON at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(CallIdentityFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
