"""Query plans of the post feeds with 100k posts (reproduces docs/posts.md).

    .venv/bin/python bench/explain_feeds.py [--posts 100000]

Fills a throwaway database (DATABASE_URL's server, else an embedded one)
with users and posts, then prints EXPLAIN (ANALYZE, BUFFERS) of the exact
SQL the gateway sends (nuell_gateway.db.hot_reads) for: the global feed's
first page and a deep page, one author's feed likewise, GetPost and the
account lookup behind every call.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from nuell_gateway.db import hot_reads
from nuell_gateway.db.embedded import start_embedded_postgres
from nuell_gateway.db.schema import upgrade_to_head
from psycopg import sql as pg_sql
from sqlalchemy.engine import URL, make_url

PAGE = 50


@contextmanager
def _throwaway_database(server: URL) -> Iterator[URL]:
    name = f"nuell_explain_{secrets.token_hex(4)}"
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(pg_sql.SQL("CREATE DATABASE {}").format(pg_sql.Identifier(name)))
    try:
        yield server.set(database=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                pg_sql.SQL("DROP DATABASE {} WITH (FORCE)").format(pg_sql.Identifier(name))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--authors", type=int, default=1_000)
    args = parser.parse_args()

    configured = os.environ.get("DATABASE_URL")
    server = make_url(
        configured or start_embedded_postgres(Path(tempfile.mkdtemp()) / "pg", delete_on_exit=True)
    )
    with _throwaway_database(server) as url:
        upgrade_to_head(url.set(drivername="postgresql+psycopg"))
        libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO users (id, email, hashed_password) "
                "SELECT gen_random_uuid(), 'u' || n || '@example.com', '$argon2id$x' "
                "FROM generate_series(1, %s) n",
                [args.authors],
            )
            conn.execute(
                "INSERT INTO posts (id, user_id, content, created_at, updated_at) "
                "SELECT gen_random_uuid(), u.id, 'post ' || n, now() - n * interval '1 second', "
                "now() - n * interval '1 second' "
                "FROM generate_series(1, %s) n "
                "JOIN LATERAL "
                "(SELECT id FROM users ORDER BY id OFFSET (n %% %s) LIMIT 1) u ON true",
                [args.posts, args.authors],
            )
            conn.execute("ANALYZE")
            author = conn.execute("SELECT user_id FROM posts LIMIT 1").fetchone()[0]  # type: ignore[index]
            post_id = conn.execute("SELECT id FROM posts LIMIT 1").fetchone()[0]  # type: ignore[index]
            deep = datetime.now(UTC) - timedelta(seconds=args.posts // 2)
            visible = {"include_inactive": False}
            queries: dict[str, tuple[str, dict[str, Any]]] = {
                "global feed, first page": (
                    hot_reads.list_posts_sql(by_author=False, after=False),
                    visible | {"limit": PAGE + 1},
                ),
                "global feed, a page half-way down": (
                    hot_reads.list_posts_sql(by_author=False, after=True),
                    visible
                    | {"limit": PAGE + 1, "before_time": deep, "before_id": uuid.UUID(int=0)},
                ),
                "one author's feed, first page": (
                    hot_reads.list_posts_sql(by_author=True, after=False),
                    visible | {"limit": PAGE + 1, "author_id": author},
                ),
                "one author's feed, a page half-way down": (
                    hot_reads.list_posts_sql(by_author=True, after=True),
                    visible
                    | {"limit": PAGE + 1, "author_id": author, "before_time": deep,
                       "before_id": uuid.UUID(int=0)},
                ),
                "GetPost": (hot_reads.GET_POSTS_SQL, visible | {"ids": [post_id]}),
                "the account lookup behind every call": (
                    hot_reads.ACCOUNT_STATE_SQL, {"id": author}
                ),
            }  # fmt: skip
            for title, (sql, params) in queries.items():
                plan = conn.execute(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}",
                    params,
                ).fetchall()
                print(f"### {title}\n\n```sql\n{sql}\n```\n\n```")
                print("\n".join(row[0] for row in plan))
                print("```\n")


if __name__ == "__main__":
    main()
