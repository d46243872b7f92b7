"""The reference of docs/compute-spec.md §12-§14 (Tokenize, band keys, CompareMany).

Built on text_analytics, which implements §1-§11; plain and slow on purpose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from tests.reference import text_analytics as ta

BAND_ROWS = 3
BANDS = ta.MINHASH_K // BAND_ROWS


def search_tokens(text: str) -> list[dict[str, Any]]:
    """Tokens with kind and position (§12), as the vectors spell them."""
    out: list[dict[str, Any]] = []
    position = 0
    for cjk, run in ta.runs(ta.normalise(text)):
        first_of_run = True
        for term in ta.run_tokens(cjk, run):
            kind = ("CJK_SINGLE" if len(run) == 1 else "CJK_BIGRAM") if cjk else "WORD"
            position += 1 if (out and not first_of_run) else (2 if out else 1)
            first_of_run = False
            out.append({"term": term, "position": position, "kind": kind})
    return out


def band_keys(text: str) -> list[int]:
    """§13: 42 keys over bands of three signature values, or none."""
    shingle_set = ta.shingles(text)
    if not shingle_set:
        return []
    signature = ta.minhash_signature(shingle_set)
    keys = []
    for band in range(BANDS):
        data = b"".join(value.to_bytes(8, "little") for value in signature[band * 3 : band * 3 + 3])
        keys.append(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))
    return keys


def tokenize(texts: Sequence[str], with_band_keys: bool) -> list[dict[str, Any]]:
    return [
        {
            "tokens": search_tokens(text),
            # Strings: 64-bit values do not survive every JSON reader.
            "band_keys": [str(key) for key in band_keys(text)] if with_band_keys else [],
        }
        for text in texts
    ]


def compare_many(text: str, others: Sequence[str]) -> list[float]:
    mine = ta.shingles(text)
    return [ta.jaccard(mine, ta.shingles(other)) for other in others]
