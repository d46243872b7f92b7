"""Query plans of the post feeds with 100k posts (reproduces docs/posts.md).

    .venv/bin/python -m bench.explain_feeds [--posts 100000] [--authors 1000]

Fills a throwaway database (as `make bench` finds one) with users and posts and
prints EXPLAIN (ANALYZE, BUFFERS) of the SQL the gateway sends (hot_reads).
"""

import argparse
import contextlib
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from nuell_gateway.db.hot_reads import ACCOUNT_STATE_SQL, GET_POSTS_SQL, list_posts_sql
from nuell_gateway.db.schema import upgrade_to_head
from sqlalchemy.engine import make_url

from bench.stack import fresh_database

PAGE = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--authors", type=int, default=1_000)
    args = parser.parse_args()
    with contextlib.ExitStack() as cleanup, tempfile.TemporaryDirectory() as logs:
        url, _, _ = fresh_database(cleanup, Path(logs))
        upgrade_to_head(make_url(url).set(drivername="postgresql+psycopg"))
        with psycopg.connect(url, autocommit=True) as conn:
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
            author, post_id = conn.execute("SELECT user_id, id FROM posts LIMIT 1").fetchone()  # type: ignore[misc]
            page = {"include_inactive": False, "limit": PAGE + 1}
            half_way = datetime.now(UTC) - timedelta(seconds=args.posts // 2)
            deep: dict[str, Any] = {"before_time": half_way, "before_id": uuid.UUID(int=0)}
            queries: list[tuple[str, str, dict[str, Any]]] = []
            for feed, mine in (("global feed", {}), ("one author's feed", {"author_id": author})):
                for where, lower in (("first page", {}), ("a page half-way down", deep)):
                    sql = list_posts_sql(by_author=bool(mine), after=bool(lower))
                    queries.append((f"{feed}, {where}", sql, page | lower | mine))
            queries.append(
                ("GetPost", GET_POSTS_SQL, {"include_inactive": False, "ids": [post_id]})
            )
            queries.append(
                ("the account lookup behind every call", ACCOUNT_STATE_SQL, {"id": author})
            )
            for title, sql, params in queries:
                plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
                rows = "\n".join(row[0] for row in plan.fetchall())
                print(f"### {title}\n\n```sql\n{sql}\n```\n\n```\n{rows}\n```\n")


if __name__ == "__main__":
    main()
