#!/usr/local/bin/python3
"""Container entrypoint (`nuell-entrypoint nuell-gateway serve`): `VAR_FILE=/path`
becomes `VAR=<the file's content, one trailing newline dropped>`, then the
command runs in this process's place. Compose mounts `secrets:` as files, which
keep secrets out of `docker inspect`; Kubernetes passes environment variables.
"""

from __future__ import annotations

import os
import sys

# Only these: a typo'd or unexpected `_FILE` variable is left alone.
FROM_FILES = (
    "DATABASE_URL",
    "NUELL_JWT_KEYS",
    "NUELL_TOTP_KEYS",
    "NUELL_BOOTSTRAP_ADMIN_PASSWORD",
    "NUELL_SMTP_URL",
)


def load(environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    for name in FROM_FILES:
        path = env.pop(f"{name}_FILE", "")
        if not path:
            continue
        if env.get(name):
            raise SystemExit(f"entrypoint: set {name} or {name}_FILE, not both")
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().removesuffix("\n").removesuffix("\r")
        except OSError as exc:
            reason = exc.strerror or exc
            raise SystemExit(f"entrypoint: {name}_FILE: cannot read {path}: {reason}") from None
        if not value:
            raise SystemExit(f"entrypoint: {name}_FILE: {path} is empty")
        env[name] = value
    return env


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: nuell-entrypoint COMMAND [ARG...]")
    os.execvpe(argv[0], argv, load(dict(os.environ)))  # noqa: S606 - our own command line


if __name__ == "__main__":
    main(sys.argv[1:])
