"""near-duplicates: FindNearDuplicates through gRPC beside rensa and datasketch on one seeded
corpus, recall against exact ground truth; its growth from 10k to 1M documents; Analyze's
documents/s direct, through the gateway and in the pure-Python reference (bench/README.md)."""

import importlib.util
import math
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import datasketch  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
import numpy
import rensa  # type: ignore[import-untyped]
from nuell.compute.v1 import compute_service_pb2 as pb  # type: ignore[import-untyped]

from bench.report import say
from bench.stack import Stack
from deploy.settings import REPO

THRESHOLD, PERMS, BANDS = 0.7, 128, 32  # 32 bands of 4 rows: the bands Nuell picks at 0.7
BLOCK, SIZES = 100_000, (10_000, 100_000, 1_000_000)  # the most one call takes; the scaling
SERVICE = "/nuell.compute.v1.ComputeService/"
OPTIONS = [("grpc.max_send_message_length", 2**28), ("grpc.max_receive_message_length", 2**28)]
KANA = [chr(c) for c in (*range(0x3041, 0x3094), *range(0x30A1, 0x30F4))]
KANJI = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]  # unified ideographs: NFKC leaves them


def vocabulary(rng: random.Random, size: int, japanese: bool) -> list[str]:
    def word() -> str:
        if japanese:
            return "".join(rng.choices(KANJI + KANA, k=rng.randint(1, 3)))
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10)))

    return list(dict.fromkeys(word() for _ in range(size)))


def shingles(text: str) -> set[str]:
    """docs/compute-spec.md §3-4 for this corpus's texts (checked against the reference)."""
    if text.isascii():
        tokens = text.rstrip(".").split()
    else:  # CJK runs split by 、 and 。 into bigrams
        runs = [r for r in re.split("[、。]", text) if r]
        tokens = [run[i : i + 2] for run in runs for i in range(max(1, len(run) - 1))]
    if len(tokens) < 3:
        return set(tokens)
    return {" ".join(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def render(words: list[str], japanese: bool) -> str:
    if japanese:  # a comma every eight words
        return "".join(w + ("、" if i % 8 == 7 else "") for i, w in enumerate(words)) + "。"
    return " ".join(words) + "."


def corpus(size: int, seed: int = 1) -> list[str]:
    """`size` texts of about 30 Zipf-distributed words, a fifth Japanese; 5% near-duplicates of
    an earlier text of the same block of 100k (Jaccard 0.7-0.95)."""
    rng, np_rng = random.Random(seed), numpy.random.default_rng(seed)
    vocab = {lang: vocabulary(rng, 50_000, lang) for lang in (False, True)}
    zipf = {lang: 1 / (numpy.arange(len(v)) + 2.7) ** 1.1 for lang, v in vocab.items()}
    picks = {lang: np_rng.choice(len(w), (size, 36), p=w / w.sum()) for lang, w in zipf.items()}
    docs: list[tuple[list[str], bool]] = []
    for i in range(size):
        if i % BLOCK and rng.random() < 0.05:
            words, japanese = docs[rng.randrange(i - i % BLOCK, i)]
            source = shingles(render(words, japanese))
            while True:
                edited = list(words)
                for _ in range(rng.randint(1, 6)):
                    edited[rng.randrange(len(edited))] = rng.choice(vocab[japanese][:5000])
                near = shingles(render(edited, japanese))
                if 0.7 <= len(source & near) / len(source | near) <= 0.95:
                    break
            docs.append((edited, japanese))
        else:
            japanese = rng.random() < 0.2
            row = picks[japanese][i][: rng.randint(24, 36)]
            docs.append(([vocab[japanese][k] for k in row], japanese))
    return [render(words, japanese) for words, japanese in docs]


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def ground_truth(sets: list[set[str]]) -> set[tuple[int, int]]:
    """Every pair at Jaccard >= THRESHOLD, exactly: prefix filtering (two sets that similar share
    one of their |A| - ceil(t|A|) + 1 rarest shingles), then each candidate verified."""
    hashed = [{hash(s) for s in shingle_set} for shingle_set in sets]
    frequency: dict[int, int] = defaultdict(int)
    for hashes in hashed:
        for h in hashes:
            frequency[h] += 1
    index: dict[int, list[int]] = defaultdict(list)
    candidates = set()
    for i, hashes in enumerate(hashed):
        rare = sorted(hashes, key=lambda h: (frequency[h], h))
        for h in rare[: len(rare) - math.ceil(THRESHOLD * len(rare) - 1e-9) + 1]:
            candidates.update((j, i) for j in index[h])
            index[h].append(i)
    return {(i, j) for i, j in candidates if jaccard(sets[i], sets[j]) >= THRESHOLD}


def verified(sets: list[set[str]], candidates: Iterable[tuple[int, list[int]]]) -> set[Any]:
    found = ((i, j) for i, near in candidates for j in near if i < j)
    return {pair for pair in found if jaccard(sets[pair[0]], sets[pair[1]]) >= THRESHOLD}


def with_rensa(texts: list[str]) -> set[tuple[int, int]]:
    sets = [shingles(text) for text in texts]
    minhashes = rensa.RMinHash.from_token_sets(sets, PERMS, 1)
    lsh = rensa.RMinHashLSH(THRESHOLD, PERMS, BANDS)
    lsh.insert_many(minhashes)
    return verified(sets, enumerate(lsh.query_all(minhashes)))


def with_datasketch(texts: list[str]) -> set[tuple[int, int]]:
    sets = [shingles(text) for text in texts]
    minhashes = datasketch.MinHash.bulk([[s.encode() for s in x] for x in sets], num_perm=PERMS)
    lsh = datasketch.MinHashLSH(THRESHOLD, PERMS)
    with lsh.insertion_session() as session:
        for i, minhash in enumerate(minhashes):
            session.insert(i, minhash)
    return verified(sets, ((i, lsh.query(minhash)) for i, minhash in enumerate(minhashes)))


def request(texts: list[str], start: int = 0) -> bytes:
    documents = [pb.Document(id=f"{start + i:07d}", text=t) for i, t in enumerate(texts)]
    return bytes(pb.FindNearDuplicatesRequest(documents=documents, threshold=THRESHOLD).SerializeToString())


def timed(work: Callable[[], Any], times: int = 1) -> tuple[float, Any]:
    """The fastest of `times` runs, with its result."""
    runs = []
    for _ in range(times):
        start = time.perf_counter()
        result = work()
        runs.append((time.perf_counter() - start, result))
    return min(runs, key=lambda run: run[0])


def peak_rss_mb(pid: int, reset: bool = False) -> float:
    """VmHWM of `pid`; `reset` starts a new peak (/proc/PID/clear_refs, Linux)."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]


def stream(call: Callable[..., Iterator[Any]], texts: list[str], **kw: Any) -> int:
    requests = (pb.AnalyzeStreamRequest(id=str(i), text=t) for i, t in enumerate(texts))
    return sum(1 for _ in call(requests, timeout=600, **kw))


def run(stack: Stack) -> dict[str, Any]:
    texts = corpus(SIZES[-1])
    main = texts[:BLOCK]
    say(f"\nnear-duplicates: {BLOCK:,} texts, threshold {THRESHOLD}; load average {_load()}")
    sets = [shingles(text) for text in main]
    spec = importlib.util.spec_from_file_location("reference", REPO / "py_gateway/tests/reference/text_analytics.py")
    reference = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(reference)  # type: ignore[union-attr]
    sample = main[:: BLOCK // 500]
    if any(shingles(text) != reference.shingles(text) for text in sample):
        raise AssertionError("the benchmark's shingles differ from the reference's")
    truth = ground_truth(sets)
    channel = grpc.insecure_channel(stack.addresses["compute"], options=OPTIONS)
    find = channel.unary_unary(SERVICE + "FindNearDuplicates", None, pb.FindNearDuplicatesResponse.FromString)

    def nuell(body: bytes) -> Callable[[], set[tuple[int, int]]]:
        return lambda: {(int(p.a), int(p.b)) for p in find(body, timeout=600).pairs}

    find(request(main[:1000]), timeout=60)  # warm
    body, figures = request(main), dict[str, Any]()
    say(f"{'':<28} {'seconds':>8} {'pairs':>7} {'recall':>7} {'false +':>8}")
    contenders = (("Nuell FindNearDuplicates", nuell(body), 3), ("rensa 0.5 (RMinHash + LSH)",
                  lambda: with_rensa(main), 3), ("datasketch 2.0 (MinHash + LSH)", lambda: with_datasketch(main), 1))
    for label, work, times in contenders:
        seconds, pairs = timed(work, times)
        recall, wrong = len(pairs & truth) / len(truth), len(pairs - truth)
        figures[label] = {"seconds": seconds, "pairs": len(pairs), "recall": recall, "false_positives": wrong}
        say(f"{label:<28} {seconds:>8.3f} {len(pairs):>7} {recall:>7.4f} {wrong:>8}")
    ratio = figures["rensa 0.5 (RMinHash + LSH)"]["seconds"] / figures["Nuell FindNearDuplicates"]["seconds"]
    say(f"exact pairs at >= {THRESHOLD}: {len(truth)}; Nuell is {ratio:.1f}x rensa's speed (fastest of 3 each)")

    pid, figures["scaling"] = stack.pids["rust_compute"], {}
    say(f"\nFindNearDuplicates in calls of <= {BLOCK:,}: {'texts':>9} {'seconds':>8} {'docs/s':>9} {'peak RSS MB':>12}")
    for size in SIZES:
        bodies = [request(texts[n : min(size, n + BLOCK)], n) for n in range(0, size, BLOCK)]
        peak_rss_mb(pid, reset=True)
        seconds, _ = timed(lambda: [find(b, timeout=600) for b in bodies])
        rss = peak_rss_mb(pid)
        figures["scaling"][size] = {"seconds": seconds, "peak_rss_mb": rss}
        say(f"{'':<42} {size:>9,} {seconds:>8.2f} {size / seconds:>9,.0f} {rss:>12.0f}")

    analyze, mb = main[:20_000], sum(len(t.encode()) for t in main[:20_000]) / 1e6
    bearer = (("authorization", f"Bearer {stack.fixture.access_token}"),)
    paths = {"rust_compute direct (AnalyzeStream)": (stack.addresses["compute"], (), analyze),
             "through the gateway (AnalyzeStream)": (stack.addresses["gateway"], bearer, analyze)}
    say(f"\nAnalyze {'':<38} {'docs':>6} {'docs/s':>9} {'MB/s':>7}")
    for label, (address, metadata, docs) in paths.items():
        with grpc.insecure_channel(address, options=OPTIONS) as ch:
            call = ch.stream_stream(SERVICE + "AnalyzeStream", pb.AnalyzeStreamRequest.SerializeToString)
            seconds, _ = timed(lambda: stream(call, docs, metadata=metadata))
        figures[label] = {"docs_per_s": len(docs) / seconds, "mb_per_s": mb * len(docs) / len(analyze) / seconds}
        say(f"{label:<46} {len(docs):>6} {len(docs) / seconds:>9,.0f} {figures[label]['mb_per_s']:>7.2f}")
    few = analyze[:1000]
    seconds, _ = timed(lambda: [reference.analyze(t) for t in few])
    figures["reference"] = {"docs_per_s": len(few) / seconds, "mb_per_s": mb * len(few) / len(analyze) / seconds}
    say(f"{'pure-Python reference, in process':<46} {len(few):>6} {len(few) / seconds:>9,.0f} {figures['reference']['mb_per_s']:>7.2f}")
    channel.close()
    return figures


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())
