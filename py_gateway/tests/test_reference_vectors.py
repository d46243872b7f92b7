# ruff: noqa: RUF001, RUF003 - the cases are deliberately full of look-alike characters
"""The reference text analytics against the shared vectors and the spec.

The first part checks that proto/testdata/compute/v1/ is exactly what the
reference and the case definitions in tests/reference/make_vectors.py give.
The second part pins the specification's trickiest rules with expectations
worked out by hand from docs/compute-spec.md, independently of the vectors.
"""

from __future__ import annotations

import unicodedata
from itertools import combinations
from typing import Any

import pytest

from tests.reference import make_vectors, vectors
from tests.reference.text_analytics import (
    MERSENNE_61,
    MINHASH_SEED,
    SplitMix64,
    analyze,
    char_count,
    compare,
    find_near_duplicates,
    h64,
    is_cjk,
    jaccard,
    line_count,
    minhash_parameters,
    normalise,
    reading_time_seconds,
    rows_per_band,
    shingles,
    simhash,
    tokens,
)

# --- The shared vectors ----------------------------------------------------

VECTOR_FILES = {rpc: vectors.load(rpc) for rpc in vectors.RPC_FILES}
ALL_CASES = [
    pytest.param(rpc, case, id=f"{rpc}/{case['name']}")
    for rpc, document in VECTOR_FILES.items()
    for case in document["cases"]
]


@pytest.mark.parametrize(("rpc", "case"), ALL_CASES)
def test_reference_reproduces_vector(rpc: str, case: dict[str, Any]) -> None:
    assert vectors.run_case(rpc, case["input"]) == case["expected"]


def test_vector_counts_and_versions() -> None:
    counts = {rpc: len(document["cases"]) for rpc, document in VECTOR_FILES.items()}
    assert counts == {"analyze": 50, "compare": 15, "find_near_duplicates": 16}
    assert {document["spec_version"] for document in VECTOR_FILES.values()} == {1}
    assert vectors.VECTOR_DIR.name == "v1"


@pytest.mark.parametrize("rpc", sorted(vectors.RPC_FILES))
def test_vector_files_are_canonical(rpc: str) -> None:
    """Sorted keys, two-space indent, UTF-8 without escapes, final newline."""
    path = vectors.VECTOR_DIR / vectors.RPC_FILES[rpc]
    assert path.read_text("utf-8") == vectors.encode(VECTOR_FILES[rpc])


def test_vector_inputs_match_the_case_definitions() -> None:
    """Together with test_reference_reproduces_vector this is make_vectors --check."""
    for rpc, definitions in make_vectors.case_inputs().items():
        stored = [(case["name"], case["input"]) for case in VECTOR_FILES[rpc]["cases"]]
        assert stored == definitions, rpc


def all_input_texts() -> list[str]:
    texts: list[str] = []
    for rpc, document in VECTOR_FILES.items():
        for case in document["cases"]:
            case_input = case["input"]
            if rpc == "analyze":
                texts.append(vectors.expand_text(case_input["text"]))
            elif rpc == "compare":
                texts += [
                    vectors.expand_text(case_input["a"]),
                    vectors.expand_text(case_input["b"]),
                ]
            else:
                for doc in case_input["documents"]:
                    texts += [doc["id"], vectors.expand_text(doc["text"])]
    return texts


def test_vectors_use_only_unicode_14_characters() -> None:
    assert unicodedata.unidata_version == "14.0.0"
    unassigned = {
        f"U+{ord(char):04X}"
        for text in all_input_texts()
        for char in text
        if unicodedata.category(char) == "Cn"
    }
    assert unassigned == set()


def test_vectors_stay_within_the_limits_and_reach_the_maximum() -> None:
    sizes = [len(text.encode("utf-8")) for text in all_input_texts()]
    assert max(sizes) == 1024 * 1024
    for case in VECTOR_FILES["find_near_duplicates"]["cases"]:
        for doc in case["input"]["documents"]:
            assert 1 <= len(doc["id"]) <= 128
            assert len(vectors.expand_text(doc["text"]).encode("utf-8")) <= 64 * 1024
    for case in VECTOR_FILES["analyze"]["cases"]:
        assert 0 <= case["input"]["top_k"] <= 100


def test_expand_text() -> None:
    assert vectors.expand_text("abc") == "abc"
    assert vectors.expand_text({"repeat": "ab", "times": 3}) == "ababab"
    assert vectors.expand_text({"repeat": "ab", "times": 0}) == ""
    with pytest.raises(ValueError, match="generator"):
        vectors.expand_text({"repeat": "ab"})


@pytest.mark.parametrize("name", ["lsh_miss_rows_per_band_four", "lsh_miss_rows_per_band_eight"])
def test_lsh_miss_vectors_differ_from_brute_force(name: str) -> None:
    """Pair (a, b) is at or above the threshold yet shares no band: an
    implementation that compared every pair would report it."""
    (case,) = [c for c in VECTOR_FILES["find_near_duplicates"]["cases"] if c["name"] == name]
    threshold = case["input"]["threshold"]
    sets = {doc["id"]: shingles(doc["text"]) for doc in case["input"]["documents"]}
    brute_force = {
        (a, b) for a, b in combinations(sorted(sets), 2) if jaccard(sets[a], sets[b]) >= threshold
    }
    reported = {(pair["a"], pair["b"]) for pair in case["expected"]["pairs"]}
    assert ("a", "b") in brute_force
    assert brute_force - reported == {("a", "b")}
    assert reported <= brute_force


# --- Section 2: normalisation ----------------------------------------------


def test_normalise_is_nfkc_then_full_lowercase() -> None:
    assert normalise("ＡＢＣ　１２３") == "abc 123"
    assert normalise("ﬁ ① Ⅻ ㍻") == "fi 1 xii 平成"
    assert normalise("Straße") == "straße"  # lowercase does not fold ß
    assert normalise("ΟΔΟΣ ΣΑΣ.") == "οδος σας."  # final sigma
    assert normalise("Σ") == "σ"  # no cased letter before: not final
    assert normalise("ΑΣ.Β") == "ασ.β"  # a cased letter follows after "."
    assert normalise("İ") == "i\u0307"
    assert normalise("ｶﾞ") == "ガ"


# --- Section 3: tokens -----------------------------------------------------


def test_cjk_ranges() -> None:
    assert is_cjk("ー")  # U+30FC prolonged sound mark
    assert not is_cjk("・")  # U+30FB katakana middle dot
    assert not is_cjk("゠")  # U+30A0 katakana double hyphen
    assert is_cjk("ァ")  # U+30A1
    assert is_cjk("ヿ")  # U+30FF
    assert is_cjk("々")  # U+3005
    assert is_cjk("\u3099")  # combining voiced sound mark
    assert not is_cjk("。")
    assert not is_cjk("、")
    assert is_cjk("가")
    assert is_cjk("ㄱ")  # U+3131
    assert is_cjk("\U00020000")
    assert not is_cjk("a")
    assert not is_cjk("Ω")


def test_cjk_runs_give_bigrams_or_the_single_character() -> None:
    assert tokens("日本語") == ["日本", "本語"]
    assert tokens("猫") == ["猫"]
    assert tokens("猫 犬。鳥") == ["猫", "犬", "鳥"]
    assert tokens("ラーメン") == ["ラー", "ーメ", "メン"]
    assert tokens("ラーメン・スープ") == ["ラー", "ーメ", "メン", "スー", "ープ"]
    assert tokens("東京tower") == ["東京", "tower"]
    assert tokens("안녕하세요") == ["안녕", "녕하", "하세", "세요"]


def test_other_runs_keep_word_segments_with_a_letter_or_number() -> None:
    assert tokens("Hello, World!") == ["hello", "world"]
    assert tokens("3.14 can't e.g.") == ["3.14", "can't", "e.g"]
    assert tokens("a 👍🏽 b -- c") == ["a", "b", "c"]
    assert tokens("foo_bar #tag") == ["foo_bar", "tag"]
    assert tokens("") == []
    assert tokens("!!! 🎉") == []


# --- Section 4: shingles and Jaccard ---------------------------------------


def test_shingles_by_token_count() -> None:
    assert shingles("") == set()
    assert shingles("a") == {"a"}
    assert shingles("a b") == {"a", "b"}
    assert shingles("a b c") == {"a b c"}
    assert shingles("a b c d") == {"a b c", "b c d"}
    assert shingles("a a a a") == {"a a a"}
    assert shingles("日本語") == {"日本", "本語"}
    assert shingles("東京タワー") == {"東京 京タ タワ", "京タ タワ ワー"}


def test_jaccard() -> None:
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a"}, set()) == 0.0
    assert jaccard({"a", "b"}, {"b", "c"}) == 1 / 3
    assert jaccard({"a", "b", "c", "d"}, {"a", "b", "c", "e"}) == 0.6


# --- Section 5: hashes -----------------------------------------------------


def test_h64_is_blake2b_64_little_endian() -> None:
    # BLAKE2b-64 of the empty input is e4a6a0577479b2b4 (digest byte order).
    assert h64("") == 0xB4B2797457A0A6E4
    assert h64("hello") == 9022087748821825191


# --- Section 6: Analyze ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("a\n", 1),
        ("\n", 1),
        ("a\nb", 2),
        ("\n\n", 2),
        ("a\n\nb", 3),
        ("a\r\nb", 2),
        ("a\u2028b", 1),
    ],
)
def test_line_count(text: str, expected: int) -> None:
    assert line_count(text) == expected
    assert analyze(text)["line_count"] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("e\u0301", 1),
        ("👨\u200d👩\u200d👧\u200d👦", 1),
        ("👍🏽", 1),
        ("🇯🇵🇺🇸", 2),
        ("\r\n", 1),
        ("नमस्ते", 3),  # Unicode 15.1+ keeps the conjunct स्ते together
        ("ｶﾞ", 1),
    ],
)
def test_char_count_counts_extended_grapheme_clusters(text: str, expected: int) -> None:
    assert char_count(text) == expected


@pytest.mark.parametrize(
    ("words", "cjk", "expected"),
    [
        (0, 0, 0),
        (1, 0, 1),
        (230, 0, 60),
        (231, 0, 61),
        (0, 1, 1),
        (0, 500, 60),
        (0, 501, 61),
        (2, 3, 1),
        (460, 1000, 240),
    ],
)
def test_reading_time_is_an_integer_ceiling(words: int, cjk: int, expected: int) -> None:
    assert reading_time_seconds(words, cjk) == expected


def test_reading_time_counts_cjk_code_points_not_bigrams() -> None:
    # W = 2 ("one", "two"), C = 3 (日本語, two bigrams): (60000 + 41400) / 115000 -> 1
    analysis = analyze("one two 日本語")
    assert analysis["word_count"] == 4
    assert analysis["reading_time_seconds"] == 1
    assert analyze("字" * 501)["reading_time_seconds"] == 61


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("3.14", 1),
        ("Pi is 3.14 exactly", 1),
        ("Hi!! there", 2),
        ("Hi!!there", 1),
        ("e.g. this", 2),
        ("a. b.", 2),
        ("...", 0),
        ("。", 0),
        ("猫。", 1),
        ("終わり。次", 2),  # a run with 。 ends a sentence without a space
        ("Done。next", 2),
        ("升！伟", 1),  # ！ is "!" after NFKC and needs white space
        ("a\n\nb", 2),
        ("a\nb", 1),
        ("a\n \nb", 1),  # only consecutive "\n" make a blank line
        ("a\r\n\r\nb", 1),
        ("stop.\u001cnext", 1),  # U+001C is not White_Space
        ("stop.\u2028next", 2),
        ("Wait… what？ ok", 3),
        ("👍. 🎉. ok", 1),
    ],
)
def test_sentence_count(text: str, expected: int) -> None:
    assert analyze(text)["sentence_count"] == expected


def test_top_terms_order_and_top_k() -> None:
    text = "b a c a b d e f g h i j k l"
    ranked = [("a", 2), ("b", 2), ("c", 1), ("d", 1), ("e", 1), ("f", 1), ("g", 1)]
    ranked += [("h", 1), ("i", 1), ("j", 1), ("k", 1), ("l", 1)]

    def terms(top_k: int) -> list[tuple[str, int]]:
        return [(t["term"], t["count"]) for t in analyze(text, top_k)["top_terms"]]

    assert terms(0) == ranked[:10]
    assert terms(1) == [("a", 2)]
    assert terms(3) == ranked[:3]
    assert terms(100) == ranked
    assert [t["term"] for t in analyze("é z e 日 Z", 100)["top_terms"]] == ["z", "e", "é", "日"]
    with pytest.raises(ValueError, match="top_k"):
        analyze(text, 101)


def test_simhash_weighting() -> None:
    assert simhash("") == 0
    assert simhash("hello") == h64("hello")  # one token: every v_i is +-1
    assert simhash("hello HELLO") == h64("hello")
    assert simhash("a b") == h64("a") & h64("b")  # disagreeing bits sum to 0
    assert simhash("a a b") == h64("a")  # count 2 outweighs count 1
    assert analyze("hello")["simhash"] == str(h64("hello"))


def test_analyze_of_empty_text() -> None:
    assert analyze("") == {
        "byte_count": 0,
        "char_count": 0,
        "word_count": 0,
        "sentence_count": 0,
        "line_count": 0,
        "reading_time_seconds": 0,
        "top_terms": [],
        "simhash": "0",
    }


# --- Section 7: Compare ----------------------------------------------------


def test_compare() -> None:
    assert compare("", "") == {"jaccard": 1.0, "simhash_distance": 0}
    assert compare("!!!", "🎉") == {"jaccard": 1.0, "simhash_distance": 0}
    assert compare("hello world", "hello there")["jaccard"] == 1 / 3
    assert compare("hello", "hello big world")["jaccard"] == 0.0
    assert compare("", "hello") == {
        "jaccard": 0.0,
        "simhash_distance": h64("hello").bit_count(),
    }


# --- Section 8: FindNearDuplicates -----------------------------------------


def test_splitmix64_outputs() -> None:
    reference = SplitMix64(0)  # the published splitmix64 sequence for seed 0
    assert [reference.next() for _ in range(3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    assert int.from_bytes(b"NUELL-MH", "big") == MINHASH_SEED
    seeded = SplitMix64(MINHASH_SEED)
    first = [seeded.next() for _ in range(4)]
    assert first[:3] == [0xBFE65F544CB833F9, 0x18F752922A94E419, 0x225264306CD60C0D]
    # a_0 comes from the first output, b_0 from the second, a_1 from the third.
    parameters = minhash_parameters()
    assert len(parameters) == 128
    assert parameters[0] == (1 + first[0] % (MERSENNE_61 - 1), first[1] % MERSENNE_61)
    assert parameters[1][0] == 1 + first[2] % (MERSENNE_61 - 1)
    assert parameters[1][1] == first[3] % MERSENNE_61


@pytest.mark.parametrize(
    ("threshold", "rows"),
    [
        (1.0, 32),
        (0.99, 32),
        (0.95, 16),
        (0.9, 8),
        (0.85, 8),
        (0.8, 4),
        (0.62, 4),
        (0.6, 2),
        (0.5, 2),
        (0.3, 2),
        (0.2, 1),
        (0.01, 1),  # no r reaches 0.99: r = 1
    ],
)
def test_rows_per_band(threshold: float, rows: int) -> None:
    assert rows_per_band(threshold) == rows


def test_documents_without_shingles_take_no_part() -> None:
    result = find_near_duplicates([("x", ""), ("y", ""), ("z", "!!!")], 0.5)
    assert result == {"clusters": [], "pairs": []}


def test_pairs_and_clusters_are_ordered_by_code_points() -> None:
    text = "one two three four"
    result = find_near_duplicates([("é", text), ("b", text), ("B", text), ("日", "x y z")], 1.0)
    assert result == {
        "clusters": [{"document_ids": ["B", "b", "é"]}],
        "pairs": [
            {"a": "B", "b": "b", "jaccard": 1.0},
            {"a": "B", "b": "é", "jaccard": 1.0},
            {"a": "b", "b": "é", "jaccard": 1.0},
        ],
    }


def test_chain_is_one_cluster_without_the_end_pair() -> None:
    # 12 tokens, 10 shingles; each step replaces one word: 7/13, 7/13, 8/12.
    docs = [
        ("a", "w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12"),
        ("b", "w01 w02 x03 w04 w05 w06 w07 w08 w09 w10 w11 w12"),
        ("c", "w01 w02 x03 w04 w05 w06 x07 w08 w09 w10 w11 w12"),
        ("d", "w01 w02 x03 w04 w05 w06 x07 w08 w09 w10 x11 w12"),
    ]
    result = find_near_duplicates(docs, 0.5)
    assert result["clusters"] == [{"document_ids": ["a", "b", "c", "d"]}]
    assert result["pairs"] == [
        {"a": "a", "b": "b", "jaccard": 7 / 13},
        {"a": "b", "b": "c", "jaccard": 7 / 13},
        {"a": "c", "b": "d", "jaccard": 8 / 12},
    ]


def test_candidates_come_from_lsh_not_from_all_pairs() -> None:
    # 40 distinct words, one substituted inside: 38 shingles each, 35 shared.
    a, b = make_vectors.MISS_R8_A, make_vectors.MISS_R8_B
    assert jaccard(shingles(a), shingles(b)) == 35 / 41  # 0.8537 >= 0.85
    # At 0.85 (r = 8) the pair shares none of the 16 bands, so it is missed;
    # at 0.8 (r = 4, 32 bands) it is a candidate and verified.
    assert find_near_duplicates([("a", a), ("b", b)], 0.85) == {"clusters": [], "pairs": []}
    assert find_near_duplicates([("a", a), ("b", b)], 0.8)["pairs"] == [
        {"a": "a", "b": "b", "jaccard": 35 / 41}
    ]


def test_request_checks() -> None:
    with pytest.raises(ValueError, match="threshold"):
        find_near_duplicates([("a", "x")], 0.0)
    with pytest.raises(ValueError, match="unique"):
        find_near_duplicates([("a", "x"), ("a", "y")], 0.5)
