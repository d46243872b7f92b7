"""SearchPosts, ListSimilarPosts (gRPC), ILIKE and pg_trgm on the same generated posts.

.venv/bin/python -m bench.search --posts 1000000 --database postgresql://127.0.0.1/nuell_search
Loads once by COPY (tokens, band keys from rust_compute; analysis columns are placeholders).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import psycopg
from nuell.compute.v1 import compute_service_pb2 as cpb  # type: ignore[import-untyped]
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2 as ppb  # type: ignore[import-untyped]
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub  # type: ignore[import-untyped]
from nuell_gateway.authz import Role, scope_string
from nuell_gateway.config import Settings
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.search_terms import chunks, tsquery_literal, tsvector_literal
from nuell_gateway.server import Gateway
from sqlalchemy.engine import make_url

CJK = "東京都大阪府市区町村人日本語学生先話電車駅春夏秋冬山川海空雨雪花猫犬朝昼夜店料理茶酒"
CJK += "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモラリルレロン"
SYL = ["ka", "ro", "mi", "te", "su", "na", "po", "li", "den", "gar", "shi", "ven", "tor", "bu"]
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
SIZES = (
    "posts",
    "ix_posts_search_vector",
    "post_band_keys",
    "ix_post_band_keys_keys",
    "pk_post_band_keys",
    "ix_posts_feed",
    "bench_trgm",
)
POST_COLUMNS = "id, user_id, content, created_at, updated_at, analysis_state, word_count, "
POST_COLUMNS += "reading_time_seconds, simhash, search_vector"


def corpus(n: int, rng: random.Random) -> list[str]:
    ja = sorted({"".join(rng.choices(CJK, k=rng.randint(2, 4))) for _ in range(30000)})
    en = sorted({"".join(rng.choices(SYL, k=rng.randint(2, 3))) for _ in range(5000)})
    rng.shuffle(ja)
    # Zipf: the word of rank i drawn in proportion to 1 / i (cumulative weights: bisect).
    wj, we = (list(itertools.accumulate(1 / (i + 1) for i in range(len(w)))) for w in (ja, en))
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.03:  # a near copy of an earlier post
            words = rng.choice(texts).split(" ")
            words[rng.randrange(len(words))] = rng.choice(en)
            texts.append(" ".join(words))
            continue
        head = "".join(rng.choices(ja, cum_weights=wj, k=rng.randint(1, 5))) + rng.choice(
            ["、", "。", ""]
        )
        tail = "".join(rng.choices(ja, cum_weights=wj, k=rng.randint(1, 5)))
        texts.append(" ".join([head, *rng.choices(en, cum_weights=we, k=rng.randint(1, 6)), tail]))
    return texts


# Built after the bulk load, not row by row during it (the GIN indexes made
# a 1M-post load take ~1 h on this machine; built afresh: minutes).
BULK_BUILT = ("ix_posts_search_vector", "ix_post_band_keys_keys")
BATCH = 1000


async def load(url: str, texts: list[str], compute: ComputeServiceStub) -> None:
    """COPY the posts with their vectors and band keys; resumes an interrupted load."""
    with psycopg.connect(url, autocommit=True) as db:
        step = 365 * 86400 / len(texts)
        done = one(db, "SELECT count(*) FROM posts")
        if done == len(texts) and not missing_indexes(db):
            return
        # Each batch is two COPYs (posts, then keys): a batch cut between them is dropped.
        db.execute(
            "DELETE FROM posts p"
            " WHERE NOT EXISTS (SELECT FROM post_band_keys k WHERE k.post_id = p.id)"
        )
        done = one(db, "SELECT count(*) FROM posts")
        if done % BATCH or done > len(texts):
            done = 0
        if done == 0:
            db.execute("TRUNCATE users, posts CASCADE")
            with db.cursor().copy("COPY users (id, email, hashed_password) FROM STDIN") as copy:
                for user in (uuid.uuid4() for _ in range(1000)):
                    copy.write_row((user, f"{user.hex}@example.com", HASH))
            start = time.time() - 365 * 86400
        else:  # continue the timeline: post i at start + i * step
            start = one(db, "SELECT extract(epoch FROM max(created_at))::float8 FROM posts")
            start -= (done - 1) * step
        users = [row[0] for row in db.execute("SELECT id FROM users ORDER BY id").fetchall()]
        if done < len(texts):
            for name in BULK_BUILT:
                db.execute(f"DROP INDEX IF EXISTS {name}")
        db.execute("ALTER TABLE posts DISABLE TRIGGER posts_post_event")  # no event log rows
        cursor = db.cursor()
        for at in range(done, len(texts), BATCH):
            batch = texts[at : at + BATCH]
            reply = await compute.Tokenize(cpb.TokenizeRequest(texts=batch, band_keys=True))
            keys: list[str] = []
            with cursor.copy(f"COPY posts ({POST_COLUMNS}) FROM STDIN") as copy:
                for i, (text, tokenized) in enumerate(zip(batch, reply.texts, strict=True)):
                    post_id, at_time = uuid.uuid4(), start + (at + i) * step
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(at_time))
                    vector = tsvector_literal(tokenized.tokens)
                    words = len(tokenized.tokens)
                    copy.write_row(
                        (post_id, users[i % 1000], text, stamp, stamp, "ready", words, 0, 0, vector)
                    )
                    if tokenized.band_keys:  # stored as PostBandKey.keys says
                        band = (
                            j << 58 | k & (1 << 58) - 1 for j, k in enumerate(tokenized.band_keys)
                        )
                        signed = ",".join(str(v - (v >> 63 << 64)) for v in band)
                        keys.append(f"{post_id}\t{{{signed}}}\n")
            with cursor.copy("COPY post_band_keys (post_id, keys) FROM STDIN") as copy:
                copy.write("".join(keys))
            if at % 100_000 == 0:
                print(f"  {at + len(batch)} posts", flush=True)
        db.execute("ALTER TABLE posts ENABLE TRIGGER posts_post_event")
        db.execute("SET maintenance_work_mem = '1GB'")
        for name in sorted(missing_indexes(db)):  # dropped above, or by an interrupted run
            print(f"  building {name}", flush=True)
            db.execute(INDEX_DEFINITIONS[name])
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        db.execute(
            "CREATE INDEX IF NOT EXISTS bench_trgm ON posts USING gin (content gin_trgm_ops)"
        )
        db.execute("VACUUM ANALYZE")


# As migration 0007 creates them.
INDEX_DEFINITIONS = {
    name: f"CREATE INDEX {name} ON {table} USING gin ({column})"
    for name, table, column in (
        ("ix_posts_search_vector", "posts", "search_vector"),
        ("ix_post_band_keys_keys", "post_band_keys", "keys"),
    )
}


def missing_indexes(db: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    found = db.execute(
        "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)", (list(BULK_BUILT),)
    ).fetchall()
    return set(BULK_BUILT) - {row[0] for row in found}


def one(db: psycopg.Connection[tuple[Any, ...]], sql: str, *params: object) -> Any:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def pct(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:8.2f} ms  p99 {p99 * 1000:8.2f} ms"


async def timed(call: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def pick(texts: list[str], rng: random.Random) -> dict[str, list[tuple[str, int]]]:
    """CJK substrings in < 0.1 % and in > 5 % of the posts, with their oracle counts."""
    normal = [unicodedata.normalize("NFKC", t).lower() for t in texts]
    picks: dict[str, list[tuple[str, int]]] = {"rare": [], "common": []}
    for _ in range(300):
        run = rng.choice(normal).rsplit(" ", 1)[-1]
        size = rng.choice((2, 3))
        q = run[(at := rng.randrange(max(1, len(run) - size + 1))) : at + size]
        hits = sum(q in t for t in normal)
        kind = "rare" if hits < len(texts) / 1000 else "common" if hits > len(texts) / 20 else ""
        if len(q) == size and kind and len(picks[kind]) < 5 and q not in dict(picks[kind]):
            picks[kind].append((q, hits))
    return picks


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--database", required=True)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    sa_url = make_url(args.database).set(drivername="postgresql+psycopg")
    upgrade_to_head(sa_url)
    argv = "rust_compute/target/release/rust_compute --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0"
    rust = await asyncio.create_subprocess_exec(
        *argv.split(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await measure(args, rust)
    finally:
        rust.terminate()


async def measure(args: argparse.Namespace, rust: asyncio.subprocess.Process) -> None:
    sa_url = make_url(args.database).set(drivername="postgresql+psycopg")
    assert rust.stdout is not None
    compute_addr = (await rust.stdout.readline()).decode().split()[-1]
    texts = corpus(args.posts, random.Random(18))  # noqa: S311
    compute = ComputeServiceStub(grpc.aio.insecure_channel(compute_addr))
    began = time.perf_counter()
    await load(args.database, texts, compute)
    print(f"{len(texts)} posts loaded in {time.perf_counter() - began:.0f} s")
    config = {"DATABASE_URL": sa_url.render_as_string(hide_password=False), "jwt_keys": "k:" * 21}
    config |= {"gateway_addr": "127.0.0.1:0", "compute_target": compute_addr}
    gateway = await Gateway.start(Settings.model_validate(config))
    db = psycopg.connect(args.database, autocommit=True)
    user = one(db, "SELECT id FROM users LIMIT 1")
    token = gateway.resources.access_tokens.issue(user_id=user, scopes=scope_string(Role.USER))
    meta = (("authorization", f"Bearer {token.token}"),)
    posts = PostServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}"))
    for kind, queries in pick(texts, random.Random(7)).items():  # noqa: S311
        print(kind, "queries (oracle counts):", queries)
        for order in (ppb.SEARCH_ORDER_RELEVANCE, ppb.SEARCH_ORDER_NEWEST):
            samples: list[float] = []
            for q, _ in queries:
                request = ppb.SearchPostsRequest(query=q, order_by=order, page_size=20)
                samples += await timed(
                    partial(posts.SearchPosts, request, metadata=meta), max(1, args.rounds // 5)
                )
            print(f"  SearchPosts {ppb.SearchOrder.Name(order):22} {pct(samples)}")
        found = []
        for q, _ in queries:
            reply = await compute.Tokenize(cpb.TokenizeRequest(texts=[p.text for p in chunks(q)]))
            tsquery = tsquery_literal([(list(t.tokens), False) for t in reply.texts])
            sql = "SELECT count(*) FROM posts WHERE search_vector @@ %s::tsquery"
            found.append(one(db, sql, tsquery))
        print(f"  ours    matches {found}")
        for name, cond in (("ILIKE", "content ILIKE %s"), ("pg_trgm", "content LIKE %s")):
            db.execute(f"SET enable_bitmapscan = {name != 'ILIKE'}")
            samples, found = [], []
            for q, _ in queries:
                sql = f"SELECT id FROM posts WHERE {cond} ORDER BY created_at DESC LIMIT 20"  # noqa: S608
                samples += await timed(partial(asyncio.to_thread, db.execute, sql, (f"%{q}%",)), 3)
                sql = f"SELECT count(*) FROM posts WHERE {cond}"  # noqa: S608
                found.append(one(db, sql, f"%{q}%"))
            print(f"  {name:7} page of 20 {pct(samples)}  matches {found}")
    rows = db.execute("SELECT post_id FROM post_band_keys LIMIT 200").fetchall()
    samples = []
    for (post_id,) in rows:
        request = ppb.ListSimilarPostsRequest(id=str(post_id))
        samples += await timed(partial(posts.ListSimilarPosts, request, metadata=meta), 1)
    print(f"ListSimilarPosts {pct(samples)}")
    sql = "SELECT relname, pg_size_pretty(pg_relation_size(oid)) FROM pg_class WHERE relname IN "
    print(db.execute(sql + "(%s, %s, %s, %s, %s, %s, %s)", SIZES).fetchall())
    await gateway.stop()


if __name__ == "__main__":
    asyncio.run(main())
