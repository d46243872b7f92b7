# ruff: noqa: RUF001 - the cases are deliberately full of look-alike characters
"""Writes proto/testdata/compute/v1/search/ (Tokenize, CompareMany) from the cases below.

Every expected value comes from the reference (search_reference.py); from
py_gateway/,

    ../.venv/bin/python -m tests.reference.search_vectors           # write
    ../.venv/bin/python -m tests.reference.search_vectors --check   # compare

Same rules as make_vectors.py: a published case never changes; only
characters of Unicode 14.0 or earlier.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tests.reference import search_reference
from tests.reference.vectors import SPEC_VERSION, VECTOR_DIR, encode

SEARCH_DIR: Path = VECTOR_DIR / "search"

TOKENIZE_CASES: list[tuple[str, list[str], bool]] = [
    ("empty_and_punctuation", ["", "!!! 。、 😀"], True),
    ("japanese_one_run", ["東京都に住む"], True),
    ("runs_leave_a_gap", ["東京・京都", "東京京都", "東京 京都"], False),
    ("mixed_scripts", ["rust言語とpython・go", "Rustで書いたWebサーバー"], True),
    ("single_cjk_runs", ["a 字 b 字本", "字"], False),
    ("nfkc_widths", ["ＡＢＣ　ﾗｰﾒﾝ", "ＰｙｔｈｏｎとＲｕｓｔ"], True),
    ("chinese_korean", ["我爱北京天安门", "한국어 문장입니다"], True),
    ("english_words", ["Hello, e-mail world! It's 3.14 o'clock."], True),
    ("short_texts_band_keys", ["a", "a b", "草"], True),
]

COMPARE_MANY_CASES: list[tuple[str, str, list[str]]] = [
    ("identical_and_disjoint", "a b c d e", ["a b c d e", "v w x y z", ""]),
    ("partial_overlap", "a b c d e", ["a b c d x", "A, B, C, D!"]),
    (
        "japanese",
        "今日は朝から雨が降っていた",
        ["今日は朝から雨が降っていた。", "今日は朝から晴れていた", "明日は雨"],
    ),
    ("empty_text", "", ["", "a"]),
]


def documents() -> dict[str, dict[str, Any]]:
    tokenize = [
        {
            "name": name,
            "input": {"texts": texts, "band_keys": with_keys},
            "expected": {"texts": search_reference.tokenize(texts, with_keys)},
        }
        for name, texts, with_keys in TOKENIZE_CASES
    ]
    compare_many = [
        {
            "name": name,
            "input": {"text": text, "others": others},
            "expected": {"jaccards": search_reference.compare_many(text, others)},
        }
        for name, text, others in COMPARE_MANY_CASES
    ]
    return {
        "tokenize.json": {"spec_version": SPEC_VERSION, "cases": tokenize},
        "compare_many.json": {"spec_version": SPEC_VERSION, "cases": compare_many},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    check = parser.parse_args().check
    stale = []
    for name, document in documents().items():
        path = SEARCH_DIR / name
        text = encode(document)
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(name)
        else:
            SEARCH_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
    if stale:
        print(f"stale search vectors: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
