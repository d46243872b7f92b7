"""SearchPosts, ListSimilarPosts (gRPC), ILIKE and pg_trgm on the same generated posts.

.venv/bin/python -m bench.search --posts 1000000 --database postgresql://127.0.0.1/nuell_search
Loads once by COPY (tokens, band keys from rust_compute; analysis columns are placeholders).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import secrets
import statistics
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import psycopg
import psycopg.sql
from nuell.auth.v1 import auth_service_pb2 as apb  # type: ignore[import-untyped]
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub  # type: ignore[import-untyped]
from nuell.compute.v1 import compute_service_pb2 as cpb  # type: ignore[import-untyped]
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2 as ppb  # type: ignore[import-untyped]
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub  # type: ignore[import-untyped]
from nuell_gateway import post_analysis
from nuell_gateway.config import Settings
from nuell_gateway.db.schema import upgrade_to_head
from nuell_gateway.search_terms import chunks, tsquery_literal, tsvector_literal
from nuell_gateway.server import Gateway
from sqlalchemy.engine import make_url

from bench.driver import percentile
from bench.near_duplicates import ground_truth
from deploy import stack
from deploy.launcher import Launcher, free_port
from deploy.settings import Address, StackSettings

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
    "pk_posts",
    "ix_posts_feed",
    "bench_trgm",
)
POST_COLUMNS = "id, user_id, content, created_at, updated_at, analysis_state, word_count, "
POST_COLUMNS += "reading_time_seconds, simhash, search_vector"


def corpus(n: int, rng: random.Random) -> tuple[list[str], list[int]]:
    """The posts, and for each the index of the post it is a near copy of (-1: none)."""
    ja = sorted({"".join(rng.choices(CJK, k=rng.randint(2, 4))) for _ in range(30000)})
    en = sorted({"".join(rng.choices(SYL, k=rng.randint(2, 3))) for _ in range(5000)})
    rng.shuffle(ja)
    # Zipf: the word of rank i drawn in proportion to 1 / i (cumulative weights: bisect).
    wj, we = (list(itertools.accumulate(1 / (i + 1) for i in range(len(w)))) for w in (ja, en))
    texts: list[str] = []
    copied: list[int] = []
    for _ in range(n):
        if texts and rng.random() < 0.03:  # a near copy of an earlier post
            source = rng.randrange(len(texts))  # what rng.choice(texts) draws
            words = texts[source].split(" ")
            words[rng.randrange(len(words))] = rng.choice(en)
            texts.append(" ".join(words))
            copied.append(source)
            continue
        copied.append(-1)
        head = "".join(rng.choices(ja, cum_weights=wj, k=rng.randint(1, 5))) + rng.choice(
            ["、", "。", ""]
        )
        tail = "".join(rng.choices(ja, cum_weights=wj, k=rng.randint(1, 5)))
        texts.append(" ".join([head, *rng.choices(en, cum_weights=we, k=rng.randint(1, 6)), tail]))
    return texts, copied


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
    p50, p99 = (1000 * percentile(sorted(samples), p) for p in (50, 99))
    return f"p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"


async def timed(call: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return samples


def pick(texts: list[str], rng: random.Random) -> dict[str, list[tuple[str, set[int]]]]:
    """CJK substrings in < 0.1 % and in > 5 % of the posts, with the oracle's posts (indexes)."""
    normal = [unicodedata.normalize("NFKC", t).lower() for t in texts]
    picks: dict[str, list[tuple[str, set[int]]]] = {"rare": [], "common": []}
    for _ in range(300):
        run = rng.choice(normal).rsplit(" ", 1)[-1]
        size = rng.choice((2, 3))
        q = run[(at := rng.randrange(max(1, len(run) - size + 1))) : at + size]
        # CJK only: a near copy's last word can be Latin, and a Latin
        # fragment is not a word query.
        known = [query for query, _ in picks["rare"] + picks["common"]]
        if len(q) != size or q in known or not all(c in CJK for c in q):
            continue
        hits = {i for i, t in enumerate(normal) if q in t}
        kind = "rare" if len(hits) < len(texts) / 1000 else ""
        kind = "common" if len(hits) > len(texts) / 20 else kind
        if kind and len(picks[kind]) < 5:
            picks[kind].append((q, hits))
    return picks


def recall(found: set[int], expected: set[int]) -> str:
    hit = len(found & expected)
    return f"recall {hit / max(1, len(expected)):.4f} precision {hit / max(1, len(found)):.4f}"


async def shingle_sets(compute: ComputeServiceStub, texts: list[str]) -> list[set[str]]:
    """Spec §4 shingles from rust_compute's tokens."""
    sets = []
    for at in range(0, len(texts), BATCH):
        reply = await compute.Tokenize(cpb.TokenizeRequest(texts=texts[at : at + BATCH]))
        for tokenized in reply.texts:
            terms = [token.term for token in tokenized.tokens]
            if len(terms) >= 3:
                sets.append(set(" ".join(terms[k : k + 3]) for k in range(len(terms) - 2)))
            else:
                sets.append(set(terms))
    return sets


def similar_sample(copied: list[int], size: int, rng: random.Random) -> list[int]:
    """Near copies and their sources (so that the sample has similar pairs), then any posts."""
    sample: set[int] = set()
    copies = [i for i, source in enumerate(copied) if source >= 0]
    for i in rng.sample(copies, min(len(copies), size // 2)):
        if len(sample) + 2 > size:
            break
        sample |= {i, copied[i]}
    while len(sample) < size:
        sample.add(rng.randrange(len(copied)))
    return sorted(sample)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--database", required=True)
    parser.add_argument("--rounds", type=int, default=250, help="timed searches per order")
    parser.add_argument("--similar-sample", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=200, help="CreatePost calls per variant")
    parser.add_argument(
        "--parts", default="search,similar,writes,sizes", help="which measurements to run"
    )
    args = parser.parse_args()
    ensure_database(args.database)
    sa_url = make_url(args.database).set(drivername="postgresql+psycopg")
    upgrade_to_head(sa_url)
    # rust_compute as the stack declares it, started by its launcher; the
    # gateway runs in this process, so the measurements can reach inside it.
    settings = StackSettings(
        compute=Address("127.0.0.1", free_port()),
        compute_metrics=Address("127.0.0.1", free_port()),
    )
    with Launcher(Path(tempfile.mkdtemp(prefix="nuell-bench-search-"))) as launcher:
        launcher.start(stack.compute_service(settings, os.environ))
        asyncio.run(measure(args, settings.compute.connect_target))


def ensure_database(url: str) -> None:
    """CREATE DATABASE for the URL's database unless it exists."""
    target = make_url(url)
    admin = target.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as db:
        exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
        if exists.fetchone() is None:
            db.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(target.database or "")
                )
            )


async def sign_in(
    db: psycopg.Connection[tuple[Any, ...]], gateway: Gateway
) -> tuple[tuple[str, str], ...]:
    """Call metadata for a bench user, signed in through AuthService.Login like any client."""
    user, email = db.execute("SELECT id, email FROM users ORDER BY id LIMIT 1").fetchone() or ()
    password = secrets.token_urlsafe(16) + "aA1!"  # a fresh one each run
    hashed = await gateway.resources.passwords.hash(password)
    sql = "UPDATE users SET hashed_password = %s, email_verified = true WHERE id = %s"
    db.execute(sql, (hashed, user))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        reply = await AuthServiceStub(channel).Login(
            apb.LoginRequest(email=email, password=password)
        )
    return (("authorization", f"Bearer {reply.access_token}"),)


@dataclass(frozen=True)
class Run:
    """What every measurement reads: the options, the corpus and the services."""

    args: argparse.Namespace
    db: psycopg.Connection[tuple[Any, ...]]
    compute: ComputeServiceStub
    posts: PostServiceStub
    meta: tuple[tuple[str, str], ...]  # a signed-in caller's metadata
    texts: list[str]
    copied: list[int]  # as corpus() returns it
    ids: list[str]  # post i of the corpus is ids[i]
    index_of: dict[str, int]


async def measure(args: argparse.Namespace, compute_addr: str) -> None:
    sa_url = make_url(args.database).set(drivername="postgresql+psycopg")
    texts, copied = corpus(args.posts, random.Random(18))  # noqa: S311
    compute = ComputeServiceStub(grpc.aio.insecure_channel(compute_addr))
    began = time.perf_counter()
    await load(args.database, texts, compute)
    print(f"{len(texts)} posts loaded in {time.perf_counter() - began:.0f} s")
    config = {"DATABASE_URL": sa_url.render_as_string(hide_password=False), "jwt_keys": "k:" * 21}
    config |= {"gateway_addr": "127.0.0.1:0", "compute_target": compute_addr}
    gateway = await Gateway.start(Settings.model_validate(config))
    db = psycopg.connect(args.database, autocommit=True)
    # Post i of the corpus is the i-th oldest (the load spaces them in time).
    ids = [row[0] for row in db.execute("SELECT id::text FROM posts ORDER BY created_at, id")]
    index_of = {post_id: i for i, post_id in enumerate(ids)}
    for i in (0, len(ids) // 2, len(ids) - 1):
        assert one(db, "SELECT content FROM posts WHERE id = %s", ids[i]) == texts[i]
    meta = await sign_in(db, gateway)
    posts = PostServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}"))
    run = Run(args, db, compute, posts, meta, texts, copied, ids, index_of)
    try:
        parts = set(args.parts.split(","))
        if "search" in parts:
            await searches(run)
        if "similar" in parts:
            await similar(run)
        if "writes" in parts:
            await writes(run)
        if "sizes" in parts:
            sizes(db)
    finally:
        await gateway.stop()


async def searches(run: Run) -> None:
    db, posts, meta, index_of = run.db, run.posts, run.meta, run.index_of
    for kind, queries in pick(run.texts, random.Random(7)).items():  # noqa: S311
        print(kind, "queries (oracle counts):", [(q, len(hits)) for q, hits in queries])
        for order in (ppb.SEARCH_ORDER_RELEVANCE, ppb.SEARCH_ORDER_NEWEST):
            first: list[float] = []
            samples: list[float] = []
            for q, _ in queries:
                call = partial(
                    posts.SearchPosts,
                    ppb.SearchPostsRequest(query=q, order_by=order, page_size=20),
                    metadata=meta,
                )
                first += await timed(call, 1)  # warm-up, reported apart
                samples += await timed(call, max(1, run.args.rounds // len(queries)))
            name = ppb.SearchOrder.Name(order)
            print(
                f"  SearchPosts {name:22} {pct(samples)}  first calls max {max(first) * 1e3:.0f} ms"
            )
        found = []
        for q, hits in queries:
            request = cpb.TokenizeRequest(texts=[p.text for p in chunks(q)])
            reply = await run.compute.Tokenize(request)
            tsquery = tsquery_literal([(list(t.tokens), False) for t in reply.texts])
            sql = "SELECT id::text FROM posts WHERE search_vector @@ %s::tsquery"
            ours = {index_of[row[0]] for row in db.execute(sql, (tsquery,))}
            found.append(f"{len(ours)} ({recall(ours, hits)})")
        print(f"  ours    matches {found}")
        for name, cond in (("ILIKE", "content ILIKE %s"), ("pg_trgm", "content LIKE %s")):
            db.execute(f"SET enable_bitmapscan = {name != 'ILIKE'}")
            samples, found = [], []
            for q, hits in queries:
                sql = f"SELECT id FROM posts WHERE {cond} ORDER BY created_at DESC LIMIT 20"  # noqa: S608
                samples += await timed(partial(asyncio.to_thread, db.execute, sql, (f"%{q}%",)), 3)
                sql = f"SELECT id::text FROM posts WHERE {cond}"  # noqa: S608
                theirs = {index_of[row[0]] for row in db.execute(sql, (f"%{q}%",))}
                found.append(f"{len(theirs)} ({recall(theirs, hits)})")
            print(f"  {name:7} page of 20 {pct(samples)}  matches {found}")
        db.execute("RESET enable_bitmapscan")


async def similar(run: Run) -> None:
    posts, meta, ids, index_of = run.posts, run.meta, run.ids, run.index_of
    rng = random.Random(14)  # noqa: S311
    chosen = rng.sample(range(len(ids)), 200)
    for label in ("first pass", "second pass"):
        samples = []
        for i in chosen:
            request = ppb.ListSimilarPostsRequest(id=ids[i])
            samples += await timed(partial(posts.ListSimilarPosts, request, metadata=meta), 1)
        print(f"ListSimilarPosts, 200 posts, {label}: {pct(samples)}")
    # Recall against the exact all-pairs Jaccard of a sample.
    sample = similar_sample(run.copied, run.args.similar_sample, rng)
    sets = await shingle_sets(run.compute, [run.texts[i] for i in sample])
    threshold = Settings.model_fields["similar_posts_threshold"].default
    pairs = {(sample[a], sample[b]) for a, b in ground_truth(sets, threshold)}
    asked = sorted({i for pair in pairs for i in pair})
    listed: dict[int, set[int]] = {}
    full_pages = 0
    began = time.perf_counter()
    for at in range(0, len(asked), 8):
        batch = asked[at : at + 8]
        replies = await asyncio.gather(
            *(
                posts.ListSimilarPosts(
                    ppb.ListSimilarPostsRequest(id=ids[i], page_size=100), metadata=meta
                )
                for i in batch
            )
        )
        for i, reply in zip(batch, replies, strict=True):
            listed[i] = {index_of[result.post.id] for result in reply.results}
            full_pages += len(reply.results) == 100
    elapsed = time.perf_counter() - began
    # Each pair counts once per side: asked from either post, the other must be listed.
    sides = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
    hit = sum(b in listed[a] for a, b in sides)
    share = hit / max(1, len(sides))
    print(
        f"ListSimilarPosts recall vs exact all-pairs Jaccard >= {threshold}, {len(sample)} posts:"
        f" {len(pairs)} pairs, {hit}/{len(sides)} found from either side = {share:.4f}"
        f" ({len(asked)} calls in {elapsed:.0f} s, {full_pages} full pages)"
    )


async def writes(run: Run) -> None:
    """CreatePost with its search index (Tokenize, vector, band keys) and without, interleaved."""
    db, posts, meta, writes = run.db, run.posts, run.meta, run.args.writes
    texts, copied = corpus(3 * writes, random.Random(99))  # noqa: S311
    # No near copies: the author's own near-duplicate check would refuse them.
    fresh = [text for text, source in zip(texts, copied, strict=True) if source < 0]
    fresh = fresh[: 2 * writes]
    real_analyze = post_analysis.analyze

    async def analyze_only(compute: Any, content: str, via: Any) -> post_analysis.Analysis:
        # Today's analysis without the search index: no Tokenize, an empty
        # vector (no GIN entries), no band keys.
        reply = await compute.analyze(cpb.AnalyzeRequest(text=content, top_k=1), via)
        return post_analysis.Analysis(
            word_count=reply.analysis.word_count,
            reading_time_seconds=reply.analysis.reading_time_seconds,
            simhash=reply.analysis.simhash,
        )

    made: list[str] = []
    times: dict[str, list[float]] = {"with search index": [], "without": []}
    try:
        for block in range(0, len(fresh), 20):
            variant = "with search index" if block // 20 % 2 == 0 else "without"
            post_analysis.analyze = real_analyze if variant != "without" else analyze_only
            for text in fresh[block : block + 20]:
                began = time.perf_counter()
                reply = await posts.CreatePost(ppb.CreatePostRequest(content=text), metadata=meta)
                times[variant].append(time.perf_counter() - began)
                made.append(reply.post.id)
    finally:
        post_analysis.analyze = real_analyze
        # The corpus stays at its size (a later run checks the count).
        db.execute("DELETE FROM posts WHERE id = ANY(%s::uuid[])", (made,))
    for variant, samples in times.items():
        mean = statistics.fmean(samples) * 1000
        print(f"CreatePost {variant:17} {pct(samples)}  mean {mean:.2f} ms ({len(samples)} calls)")


def sizes(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    sql = "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname = ANY(%s)"
    found = dict(db.execute(sql, (list(SIZES),)).fetchall())
    print("sizes:", ", ".join(f"{name} {found.get(name, 0) / 2**20:.0f} MB" for name in SIZES))


if __name__ == "__main__":
    main()
