"""near-duplicates: FindNearDuplicates through gRPC beside rensa and datasketch on one seeded
corpus, recall against exact ground truth; its growth from 10k to 1M documents; Analyze's
documents/s direct, through the gateway and in the pure-Python reference (bench/README.md)."""

import importlib
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
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
SERVICE, ENCODE = "/nuell.compute.v1.ComputeService/", pb.AnalyzeStreamRequest.SerializeToString
OPTIONS = [("grpc.max_send_message_length", 2**28), ("grpc.max_receive_message_length", 2**28)]
CJK = [chr(c) for c in (*range(0x4E00, 0x55D0), *range(0x3041, 0x3094), *range(0x30A1, 0x30F4))]
WORDS = {False: (list("abcdefghijklmnopqrstuvwxyz"), 2, 10), True: (CJK, 1, 3)}  # NFKC keeps CJK
NUELL, RENSA, DATASKETCH = "Nuell FindNearDuplicates", "rensa 0.5", "datasketch 2.0"
Pairs = set[tuple[int, int]]


def shingles(text: str) -> set[str]:
    """docs/compute-spec.md §3-4 for this corpus's texts (checked against the reference)."""
    if text.isascii():
        tokens = text.rstrip(".").split()
    else:  # CJK runs split by 、 and 。 into bigrams
        runs = re.findall("[^、。]+", text)
        tokens = [r[i : i + 2] for r in runs for i in range(max(1, len(r) - 1))]
    if len(tokens) < 3:
        return set(tokens)
    return {" ".join(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def render(words: list[str], japanese: bool) -> str:
    if japanese:  # a comma every eight words
        return "".join(w + ("、" if i % 8 == 7 else "") for i, w in enumerate(words)) + "。"
    return " ".join(words) + "."


def corpus(size: int, seed: int = 1) -> list[str]:
    """~30 Zipf-distributed words a text, 1/5 Japanese; 5% edited copies (Jaccard 0.7-0.95)."""
    rng, np_rng = random.Random(seed), numpy.random.default_rng(seed)  # noqa: S311
    vocab = {}
    for lang, (letters, low, high) in WORDS.items():
        made = ("".join(rng.choices(letters, k=rng.randint(low, high))) for _ in range(50_000))
        vocab[lang] = list(dict.fromkeys(made))
    zipf = {lang: 1 / (numpy.arange(len(v)) + 2.7) ** 1.1 for lang, v in vocab.items()}
    picks = {lang: np_rng.choice(len(w), (size, 36), p=w / w.sum()) for lang, w in zipf.items()}
    docs: list[tuple[list[str], bool]] = []
    for i in range(size):
        if i % BLOCK and rng.random() < 0.05:
            words, japanese = docs[rng.randrange(i - i % BLOCK, i)]
            source, edited = shingles(render(words, japanese)), list(words)
            while not 0.7 <= jaccard(source, shingles(render(edited, japanese))) <= 0.95:
                edited = list(words)
                for _ in range(rng.randint(1, 6)):
                    edited[rng.randrange(len(edited))] = rng.choice(vocab[japanese][:5000])
        else:
            japanese = rng.random() < 0.2
            edited = [vocab[japanese][k] for k in picks[japanese][i][: rng.randint(24, 36)]]
        docs.append((edited, japanese))
    return [render(words, japanese) for words, japanese in docs]


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def verified(sets: list[set[str]], pairs: Iterable[tuple[int, int]], threshold: float) -> Pairs:
    return {(i, j) for i, j in pairs if i < j and jaccard(sets[i], sets[j]) >= threshold}


def ground_truth(sets: list[set[str]], threshold: float = THRESHOLD) -> Pairs:
    """Every pair (i < j) at Jaccard >= threshold: prefix filtering, then exact Jaccard.

    Two sets at Jaccard >= t share a shingle among the first |A| - ceil(t |A|) + 1
    of each, in any one global order (rarest first keeps the candidate lists short).
    """
    frequency = Counter(s for shingle_set in sets for s in shingle_set)
    index, candidates = defaultdict[str, list[int]](list), Pairs()
    for i, shingle_set in enumerate(sets):
        rare = sorted(shingle_set, key=lambda s: (frequency[s], s))
        for s in rare[: len(rare) + int((-threshold * len(rare) + 1e-9) // 1) + 1]:
            candidates.update((j, i) for j in index[s])
            index[s].append(i)
    return verified(sets, candidates, threshold)


def peer(name: str, texts: list[str]) -> Pairs:
    sets = [shingles(text) for text in texts]
    if name == RENSA:
        rminhashes = rensa.RMinHash.from_token_sets(sets, PERMS, 1)
        rlsh = rensa.RMinHashLSH(THRESHOLD, PERMS, BANDS)
        rlsh.insert_many(rminhashes)
        found = ((i, j) for i, js in enumerate(rlsh.query_all(rminhashes)) for j in js)
    else:
        minhashes = datasketch.MinHash.bulk([[s.encode() for s in x] for x in sets], num_perm=PERMS)
        lsh = datasketch.MinHashLSH(THRESHOLD, PERMS)
        for i, minhash in enumerate(minhashes):
            lsh.insert(i, minhash)
        found = ((i, j) for i, m in enumerate(minhashes) for j in lsh.query(m))
    return verified(sets, found, THRESHOLD)


def request(texts: list[str], start: int = 0) -> Any:
    docs = [pb.Document(id=f"{start + i:07d}", text=t) for i, t in enumerate(texts)]
    return pb.FindNearDuplicatesRequest(documents=docs, threshold=THRESHOLD).SerializeToString()


def timed(work: Callable[[], Any], times: int = 1) -> tuple[float, Any]:
    runs = [(time.perf_counter(), work(), time.perf_counter()) for _ in range(times)]
    return min(((end - start, result) for start, result, end in runs), key=lambda run: run[0])


def run(stack: Stack) -> dict[str, Any]:
    texts, load = corpus(SIZES[-1]), " ".join(f"{x:.2f}" for x in os.getloadavg())
    main, figures, pid = texts[:BLOCK], dict[str, Any](), stack.pids["rust_compute"]
    say(f"\nnear-duplicates: {BLOCK:,} texts, threshold {THRESHOLD}; load average {load}")
    sys.path.insert(0, str(REPO / "py_gateway/tests"))
    reference = importlib.import_module("reference.text_analytics")
    assert all(shingles(t) == reference.shingles(t) for t in main[:: BLOCK // 500]), "shingles"
    truth = ground_truth([shingles(text) for text in main])
    channels = {n: grpc.insecure_channel(a, options=OPTIONS) for n, a in stack.addresses.items()}
    decode = pb.FindNearDuplicatesResponse.FromString
    find = channels["compute"].unary_unary(SERVICE + "FindNearDuplicates", None, decode)
    body, _ = request(main), find(request(main[:1000]), timeout=60)  # the second warms up
    say(f"{'':<28} {'seconds':>8} {'pairs':>7} {'recall':>7} {'false +':>8}")
    for label, work, times in ((NUELL, lambda: find(body, timeout=600).pairs, 3),
                               (RENSA, lambda: peer(RENSA, main), 3),
                               (DATASKETCH, lambda: peer(DATASKETCH, main), 1)):  # fmt: skip
        seconds, found = timed(work, times)
        pairs = {(int(p.a), int(p.b)) for p in found} if label == NUELL else found
        recall, wrong = len(pairs & truth) / len(truth), len(pairs - truth)
        figures[label] = dict(seconds=seconds, pairs=len(pairs), recall=recall, false_pos=wrong)
        say(f"{label:<28} {seconds:>8.3f} {len(pairs):>7} {recall:>7.4f} {wrong:>8}")
    ratio = figures[RENSA]["seconds"] / figures[NUELL]["seconds"]
    say(f"exact pairs: {len(truth)}; Nuell is {ratio:.1f}x rensa's speed (fastest of 3 each)")
    say("\nFindNearDuplicates, <= 100k a call      texts  seconds    docs/s  peak MB")
    for size in SIZES:
        bodies = [request(texts[n : min(size, n + BLOCK)], n) for n in range(0, size, BLOCK)]
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # a new peak RSS (VmHWM) from here
        seconds, _ = timed(lambda: [find(b, timeout=600) for b in bodies])  # noqa: B023
        rss = int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
        figures[f"scaling {size}"] = {"seconds": seconds, "peak_rss_mb": rss}
        say(f"{'':<35} {size:>9,} {seconds:>8.2f} {size / seconds:>9,.0f} {rss:>8.0f}")
    analyze, mb_per_doc = main[:20_000], sum(len(t.encode()) for t in main[:20_000]) / 2e10
    messages = [pb.AnalyzeStreamRequest(id=str(i), text=t) for i, t in enumerate(analyze)]
    bearer = {"gateway": (("authorization", f"Bearer {stack.fixture.access_token}"),)}
    say(f"\nAnalyze: AnalyzeStream or the reference {'':<6} {'docs':>6} {'docs/s':>9} {'MB/s':>7}")
    for name, docs in (("compute", 20_000), ("gateway", 20_000), ("reference", 1000)):
        work = lambda: [reference.analyze(t) for t in analyze[:docs]]  # noqa: B023, E731
        if name != "reference":
            call = channels[name].stream_stream(SERVICE + "AnalyzeStream", ENCODE)
            work = lambda: list(call(iter(messages), timeout=600, metadata=bearer.get(name)))  # noqa: B023, E731
        rate = docs / timed(work)[0]
        figures[f"analyze {name}"] = {"docs_per_s": rate, "mb_per_s": rate * mb_per_doc}
        say(f"{name:<46} {docs:>6} {rate:>9,.0f} {rate * mb_per_doc:>7.2f}")
    for channel in channels.values():
        channel.close()
    return figures
