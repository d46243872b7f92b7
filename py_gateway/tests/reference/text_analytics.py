"""Reference implementation of docs/compute-spec.md, version 1.

Every function here is a direct reading of one section of the specification
(section numbers in the comments); clarity wins over speed. The results are
plain data shaped like the JSON of the proto messages in
proto/nuell/compute/v1/compute_service.proto, with the proto field names:
`analyze` gives a TextAnalysis, `compare` a CompareResponse and
`find_near_duplicates` a FindNearDuplicatesResponse. The 64-bit SimHash is a
decimal string, as proto3 JSON writes a fixed64, so it survives JSON in every
language.

Requests outside the proto's rules (top_k above 100, a threshold outside
(0, 1], duplicate document ids) raise ValueError; the size limits of
section 10 are the services' business and are not checked here.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import combinations, pairwise
from typing import TypedDict

from uniseg.graphemecluster import grapheme_clusters
from uniseg.wordbreak import words

SPEC_VERSION = 1

# Section 3.
CJK_RANGES: tuple[tuple[int, int], ...] = (
    # Han
    (0x3005, 0x3005),
    (0x3007, 0x3007),
    (0x303B, 0x303B),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
    # Hiragana
    (0x3041, 0x3096),
    (0x3099, 0x309F),
    # Katakana, except U+30A0 and U+30FB (punctuation)
    (0x30A1, 0x30FA),
    (0x30FC, 0x30FF),
    (0x31F0, 0x31FF),
    (0xFF66, 0xFF9F),
    # Hangul
    (0x1100, 0x11FF),
    (0x3131, 0x318E),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7A3),
    (0xD7B0, 0xD7FF),
)

# Section 6: sentence terminators, and the White_Space property (PropList.txt).
# str.isspace is not used: it is also true for U+001C..U+001F, which are not
# White_Space.
SENTENCE_TERMINATORS = frozenset(".!?。")
WHITE_SPACE = frozenset(
    "\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# Section 6: reading speeds.
WORDS_PER_MINUTE = 230
CJK_CHARS_PER_MINUTE = 500
DEFAULT_TOP_K = 10
MAX_TOP_K = 100

# Section 8.
MINHASH_K = 128
MERSENNE_61 = (1 << 61) - 1
MINHASH_SEED = 0x4E55454C4C2D4D48  # "NUELL-MH"
ROWS_PER_BAND_CHOICES = (32, 16, 8, 4, 2, 1)
BAND_RECALL = 0.99
MASK64 = (1 << 64) - 1


class TermCount(TypedDict):
    term: str
    count: int


class TextAnalysis(TypedDict):
    byte_count: int
    char_count: int
    word_count: int
    sentence_count: int
    line_count: int
    reading_time_seconds: int
    top_terms: list[TermCount]
    simhash: str


class CompareResult(TypedDict):
    jaccard: float
    simhash_distance: int


class DocumentPair(TypedDict):
    a: str
    b: str
    jaccard: float


class Cluster(TypedDict):
    document_ids: list[str]


class NearDuplicates(TypedDict):
    clusters: list[Cluster]
    pairs: list[DocumentPair]


# --- Section 2: normalisation ----------------------------------------------


def normalise(text: str) -> str:
    """lowercase(NFKC(text)), with the full default case conversion."""
    return unicodedata.normalize("NFKC", text).lower()


# --- Section 3: tokens -----------------------------------------------------


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_letter_or_number(char: str) -> bool:
    """General Category L* or N*."""
    return unicodedata.category(char)[0] in ("L", "N")


def runs(normalised: str) -> list[tuple[bool, str]]:
    """The maximal runs of the text as (is_cjk_run, run), in text order."""
    result: list[tuple[bool, str]] = []
    for char in normalised:
        cjk = is_cjk(char)
        if result and result[-1][0] == cjk:
            result[-1] = (cjk, result[-1][1] + char)
        else:
            result.append((cjk, char))
    return result


def word_segments(text: str) -> list[str]:
    """UAX #29 word segments of `text` alone."""
    return [str(segment) for segment in words(text)]


def run_tokens(cjk: bool, run: str) -> list[str]:
    if cjk:
        if len(run) == 1:
            return [run]
        return [run[i : i + 2] for i in range(len(run) - 1)]
    return [
        segment
        for segment in word_segments(run)
        if any(is_letter_or_number(char) for char in segment)
    ]


def tokens_of_normalised(normalised: str) -> list[str]:
    result: list[str] = []
    for cjk, run in runs(normalised):
        result.extend(run_tokens(cjk, run))
    return result


def tokens(text: str) -> list[str]:
    """The token sequence of `text` (which is normalised first)."""
    return tokens_of_normalised(normalise(text))


# --- Section 4: shingles and Jaccard ---------------------------------------


def shingles_of_tokens(token_list: Sequence[str]) -> set[str]:
    n = len(token_list)
    if n >= 3:
        return {" ".join(token_list[i : i + 3]) for i in range(n - 2)}
    return set(token_list)


def shingles(text: str) -> set[str]:
    return shingles_of_tokens(tokens(text))


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# --- Section 5: hashes -----------------------------------------------------


def h64(s: str) -> int:
    digest = hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


# --- Section 6: Analyze ----------------------------------------------------


def line_count(text: str) -> int:
    if text == "":
        return 0
    pieces = len(text.split("\n"))
    return pieces - 1 if text.endswith("\n") else pieces


def char_count(text: str) -> int:
    """Extended grapheme clusters of `text`."""
    return sum(1 for _ in grapheme_clusters(text))


def reading_time_seconds(other_words: int, cjk_chars: int) -> int:
    """ceil((W*60*500 + C*60*230) / (230*500)) in integers."""
    numerator = other_words * 60 * CJK_CHARS_PER_MINUTE + cjk_chars * 60 * WORDS_PER_MINUTE
    denominator = WORDS_PER_MINUTE * CJK_CHARS_PER_MINUTE
    return -(-numerator // denominator)


def top_terms(token_list: Iterable[str], top_k: int) -> list[TermCount]:
    limit = DEFAULT_TOP_K if top_k == 0 else top_k
    counts = Counter(token_list)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"term": term, "count": count} for term, count in ranked[:limit]]


def counts_for_sentence(char: str) -> bool:
    """A sentence candidate counts when it holds one of these code points."""
    return is_cjk(char) or is_letter_or_number(char)


def sentence_ends(normalised: str) -> set[int]:
    """Positions where a sentence ends (section 6, "Sentences")."""
    s = normalised
    ends: set[int] = set()
    i = 0
    while i < len(s):
        if s[i] in SENTENCE_TERMINATORS:
            j = i
            while j < len(s) and s[j] in SENTENCE_TERMINATORS:
                j += 1
            if j == len(s) or s[j] in WHITE_SPACE or "。" in s[i:j]:
                ends.add(j)
            i = j
        elif s[i] == "\n":
            j = i
            while j < len(s) and s[j] == "\n":
                j += 1
            if j - i >= 2:
                ends.add(i)
            i = j
        else:
            i += 1
    return ends


def sentence_count(normalised: str) -> int:
    bounds = [0, *sorted(sentence_ends(normalised)), len(normalised)]
    return sum(
        1
        for start, end in pairwise(bounds)
        if any(counts_for_sentence(char) for char in normalised[start:end])
    )


def simhash_of_tokens(token_list: Iterable[str]) -> int:
    v = [0] * 64
    for word, count in Counter(token_list).items():
        hashed = h64(word)
        for bit in range(64):
            if (hashed >> bit) & 1:
                v[bit] += count
            else:
                v[bit] -= count
    return sum(1 << bit for bit in range(64) if v[bit] > 0)


def simhash(text: str) -> int:
    return simhash_of_tokens(tokens(text))


def analyze(text: str, top_k: int = 0) -> TextAnalysis:
    if not 0 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be in 0..{MAX_TOP_K}, got {top_k}")
    normalised = normalise(text)
    token_list: list[str] = []
    other_words = 0
    cjk_chars = 0
    for cjk, run in runs(normalised):
        found = run_tokens(cjk, run)
        token_list.extend(found)
        if cjk:
            cjk_chars += len(run)
        else:
            other_words += len(found)
    return {
        "byte_count": len(text.encode("utf-8")),
        "char_count": char_count(text),
        "word_count": len(token_list),
        "sentence_count": sentence_count(normalised),
        "line_count": line_count(text),
        "reading_time_seconds": reading_time_seconds(other_words, cjk_chars),
        "top_terms": top_terms(token_list, top_k),
        "simhash": str(simhash_of_tokens(token_list)),
    }


# --- Section 7: Compare ----------------------------------------------------


def compare(a: str, b: str) -> CompareResult:
    return {
        "jaccard": jaccard(shingles(a), shingles(b)),
        "simhash_distance": (simhash(a) ^ simhash(b)).bit_count(),
    }


# --- Section 8: FindNearDuplicates -----------------------------------------


class SplitMix64:
    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


@cache
def minhash_parameters() -> tuple[tuple[int, int], ...]:
    """(a_i, b_i) for i = 0 .. 127, a_i drawn before b_i."""
    rng = SplitMix64(MINHASH_SEED)
    parameters: list[tuple[int, int]] = []
    for _ in range(MINHASH_K):
        a = 1 + rng.next() % (MERSENNE_61 - 1)
        b = rng.next() % MERSENNE_61
        parameters.append((a, b))
    return tuple(parameters)


def minhash_signature(shingle_set: set[str]) -> tuple[int, ...]:
    xs = [h64(s) % MERSENNE_61 for s in shingle_set]
    return tuple(min((a * x + b) % MERSENNE_61 for x in xs) for a, b in minhash_parameters())


def band_recall(threshold: float, rows: int) -> float:
    """1 - (1 - t^r)^(128/r), in doubles."""
    return 1.0 - (1.0 - threshold**rows) ** (MINHASH_K // rows)


def rows_per_band(threshold: float) -> int:
    for rows in ROWS_PER_BAND_CHOICES:
        if band_recall(threshold, rows) >= BAND_RECALL:
            return rows
    return 1


def candidate_pairs(signatures: dict[str, tuple[int, ...]], rows: int) -> set[tuple[str, str]]:
    """Pairs (a, b), a < b, that share at least one band."""
    candidates: set[tuple[str, str]] = set()
    for band in range(MINHASH_K // rows):
        buckets: dict[tuple[int, ...], list[str]] = defaultdict(list)
        for doc_id, signature in signatures.items():
            buckets[signature[band * rows : band * rows + rows]].append(doc_id)
        for ids in buckets.values():
            candidates.update(combinations(sorted(ids), 2))
    return candidates


def connected_components(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    neighbours: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        component: set[str] = set()
        stack = [start]
        while stack:
            node = stack.pop()
            if node in component:
                continue
            component.add(node)
            stack.extend(neighbours[node] - component)
        seen |= component
        components.append(sorted(component))
    return sorted(components, key=lambda ids: ids[0])


def find_near_duplicates(documents: Sequence[tuple[str, str]], threshold: float) -> NearDuplicates:
    """`documents` is a sequence of (id, text)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    ids = [doc_id for doc_id, _ in documents]
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique")

    shingle_sets = {doc_id: shingles(text) for doc_id, text in documents}
    shingle_sets = {doc_id: s for doc_id, s in shingle_sets.items() if s}
    signatures = {doc_id: minhash_signature(s) for doc_id, s in shingle_sets.items()}

    pairs: list[DocumentPair] = []
    for a, b in sorted(candidate_pairs(signatures, rows_per_band(threshold))):
        similarity = jaccard(shingle_sets[a], shingle_sets[b])
        if similarity >= threshold:
            pairs.append({"a": a, "b": b, "jaccard": similarity})

    components = connected_components((pair["a"], pair["b"]) for pair in pairs)
    return {
        "clusters": [{"document_ids": component} for component in components],
        "pairs": pairs,
    }
