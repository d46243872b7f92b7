"""Embedded PostgreSQL (the `pgserver` wheel) for machines without a server.

`make run` and the tests use it when no `DATABASE_URL` is given. The server
listens on a Unix socket only, under its data folder, and stops when the
process that started it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server whose data lives in `data_dir`.

    Returns a libpq URL for its `postgres` database. Data persists across
    runs unless `delete_on_exit` is set (tests use throwaway folders).
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset; /tmp does for the lock.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver
    except ImportError as exc:  # optional extra, so say how to get it
        raise RuntimeError(
            "embedded PostgreSQL needs the `pgserver` wheel: "
            "pip install 'nuell-gateway[embedded-db]' (or set DATABASE_URL)"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="delete" if delete_on_exit else "stop")
    url: str = server.get_uri()
    logger.info("embedded PostgreSQL ready", extra={"data_dir": str(data_dir)})
    return url
