# ruff: noqa: RUF001 - the cases are deliberately full of look-alike characters
"""Writes proto/testdata/compute/v1/ from the case definitions below.

Every expected value is computed by the reference (text_analytics.py), so
the files are reproducible: from py_gateway/,

    ../.venv/bin/python -m tests.reference.make_vectors           # write
    ../.venv/bin/python -m tests.reference.make_vectors --check   # compare

Version 1 of the vectors is frozen with version 1 of the specification:
once published, a case's input and expected output never change. A new
case may be appended when it agrees with the specification as written.
Only characters assigned in Unicode 14.0 or earlier appear (spec section 1).
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

from tests.reference.vectors import RPC_FILES, SPEC_VERSION, VECTOR_DIR, encode, run_case

MAX_TEXT_BYTES = 1024 * 1024

# --- Analyze ---------------------------------------------------------------

TOP_K_TEXT = "pear apple fig apple pear kiwi fig date plum lime yam oat rye bean corn"

ANALYZE_CASES: list[tuple[str, Any, int]] = [
    ("empty", "", 0),
    (
        "ascii_prose",
        "The quick brown fox jumps over the lazy dog. The dog didn't move! "
        "Why would it? Nobody knows.",
        0,
    ),
    (
        "numbers_and_contractions",
        "Pi is about 3.14, not 3. We can't round it; it's 3.14159, "
        "and 1,000,000.5 times that is big.",
        0,
    ),
    ("abbreviations", "Dr. Smith met Mr. Jones at 5 p.m. today. They talked, e.g. about U.S.A.", 0),
    ("terminator_runs", "Hi!! there... Really?! Yes.No. Wait?!what", 0),
    ("no_terminator", "no terminator here", 0),
    ("only_punctuation", "... !!! ??? 。。。 ・", 0),
    ("blank_lines", "First paragraph without a stop\n\nSecond one\n\n\n\nThird\nstill third", 0),
    ("blank_line_after_terminator", "Hello.\n\nWorld.", 0),
    ("whitespace_line_is_not_blank", "one\n \ntwo", 0),
    ("crlf_blank_line_is_not_blank", "one\r\n\r\ntwo", 0),
    ("leading_and_trailing_blank_lines", "\n\n\nbody text\n\n\n", 0),
    ("lines_single_newline", "\n", 0),
    ("lines_two_newlines", "\n\n", 0),
    ("lines_trailing_newline", "a\n", 0),
    ("lines_two_lines", "a\nb", 0),
    ("lines_trailing_blank_line", "a\n\n", 0),
    ("lines_crlf", "a\r\nb\r\n", 0),
    ("lines_only_line_feed_counts", "a\u2028b\u0085c\rd\u000be", 0),
    ("sentence_white_space_variants", "one.\u2028two.\u0085three.\u00a0four.\tfive.\u3000six", 0),
    ("sentence_information_separator_is_not_white_space", "stop.\u001cnext.\u001fend", 0),
    ("sentence_ideographic_full_stop", "終わり。次の文。Done。next a.。b", 0),
    ("sentence_nfkc_punctuation", "Wait… what？ ok｡ fine！", 0),
    (
        "japanese",
        "東京は日本の首都です。ラーメンが大好き、でもカレーも好き。スーパー・マーケットへ行こう",
        0,
    ),
    ("japanese_iteration_marks", "人々は時々、色々なことを考える。〇〇〻", 0),
    ("single_cjk_characters", "猫 犬。鳥", 0),
    ("katakana_punctuation_is_not_cjk", "ラーメン・スープ゠セット", 0),
    ("halfwidth_katakana", "ｶﾀｶﾅ ﾗｰﾒﾝ｡ｶﾞｷﾞ", 0),
    ("korean", "안녕하세요. 저는 학생입니다! 한국어를 공부해요?", 0),
    ("korean_jamo", "\u1100\u1161\u11a8 ㅋㅋㅋ 한", 0),
    (
        "chinese",
        "我爱北京天安门。天安门上太阳升！伟大领袖毛主席，指引我们向前进。",
        0,
    ),
    (
        "mixed_scripts",
        "Hello世界! Привет, мир. こんにちはWorld 123 ١٢٣ مرحبا שלום 한국어abc",
        0,
    ),
    ("thai_without_spaces", "สวัสดีครับ ภาษาไทย", 0),
    ("devanagari_conjuncts", "नमस्ते दुनिया। क्षत्रिय", 0),
    (
        "case_mapping",
        "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΑΣ. Σ ΑΣ.Β Σ.Σ Straße STRASSE İstanbul ǅemal ΆΈΉ",
        0,
    ),
    ("fullwidth_ascii", "ＨＥＬＬＯ　Ｗｏｒｌｄ！ＮＦＫＣ　ｔｅｓｔ　１２３．４５。", 0),
    ("compatibility_characters", "ﬁnance ① ² Ⅻ ㍻ ℃ ㎏ ｶﾞ", 0),
    (
        "emoji_and_graphemes",
        "Family: 👨‍👩‍👧‍👦 thumbs 👍🏽 flag 🇯🇵 heart ❤️ keycap 1️⃣ coder 👩🏽‍💻. "
        "Cafe\u0301 na\u0303o a\u0308\u0301 z\u0351\u0352.",
        0,
    ),
    ("emoji_only", "👍🏽🎉🇯🇵 ❤️", 0),
    ("combining_marks_alone", "\u0301\u0308 a\u0301", 0),
    (
        "symbols_and_urls",
        "#hashtag @user https://example.com/path?q=1 foo_bar e-mail user@example.org $5 50%",
        0,
    ),
    ("top_k_default_ties", TOP_K_TEXT, 0),
    ("top_k_one", TOP_K_TEXT, 1),
    ("top_k_three_ties", TOP_K_TEXT, 3),
    ("top_k_hundred", TOP_K_TEXT, 100),
    ("top_k_code_point_order", "Zebra zebra Äpfel apfel éclair eclair 日本 Ω ω 10 9", 100),
    ("reading_time_rounds_up_words", {"repeat": "word ", "times": 231}, 0),
    ("reading_time_rounds_up_cjk", {"repeat": "字", "times": 501}, 0),
    ("reading_time_mixed", "one two 日本語", 0),
    ("max_size_text", {"repeat": "日本語 text. ", "times": MAX_TEXT_BYTES // 16}, 5),
]

# --- Compare ---------------------------------------------------------------

NEAR_A = "the committee approved the new budget for the city library after a long debate"
NEAR_B = "the committee approved the new budget for the town library after a long debate"

COMPARE_CASES: list[tuple[str, Any, Any]] = [
    ("identical", NEAR_A, NEAR_A),
    ("disjoint", "apples and oranges are fruit", "cats chase small birds"),
    ("both_empty", "", ""),
    ("one_empty", "", "hello world again"),
    ("both_without_tokens", "!!! ...", "👍🏽 🎉"),
    ("one_token_each_equal", "Hello", "hello!"),
    ("two_tokens_each", "hello world", "hello there"),
    ("one_token_against_three", "hello", "hello big world"),
    ("near_duplicate", NEAR_A, NEAR_B),
    ("reordered_words", "one two three four five", "five four three two one"),
    ("normalisation_makes_equal", "ＨＥＬＬＯ， Ｗｏｒｌｄ！ ＡＧＡＩＮ", "hello world again"),
    ("repeated_shingles", "a a a a a", "a a a"),
    ("cjk", "東京タワーに行きました", "東京タワーへ行きました"),
    ("mixed_scripts", "Hello世界 again", "hello 世界 again"),
    (
        "max_size_texts",
        {"repeat": "今日は良い天気です。\n\n", "times": MAX_TEXT_BYTES // 32},
        {"repeat": "今日は悪い天気です。\n\n", "times": MAX_TEXT_BYTES // 32},
    ),
]

# --- FindNearDuplicates ----------------------------------------------------

# Pairs whose Jaccard similarity is at or above the threshold but that share
# no LSH band, so the specified candidate generation misses them (found by
# searching random 40-word texts with one to eight substituted words). They
# pin the exact MinHash parameters and banding: brute force would report
# them.
MISS_R4_A = (
    "show home pull wear seek wore core tone plus navy wish bear talk meat zone term cell "
    "huge site risk mill said knew five cook debt more harm lost ward nine king hate feel "
    "poll fort then land zero into"
)
MISS_R4_B = MISS_R4_A.replace("huge", "golf").replace("lost", "sole").replace("nine", "word")
MISS_R8_A = (
    "fish beer send fair huge city twin wing bill rule line fall ways form king dust wind "
    "meat area note soft road port grew view true text dual bath rush tony jean user burn "
    "hand over cool said seen mood"
)
MISS_R8_B = MISS_R8_A.replace("grew", "game")

WORDS = """
river stone cloud apple bread chair light sound table water paper green plant music
train house field night storm glass smile dream money heart metal ocean tiger piano
honey lemon grape horse sheep mouse eagle snake brick fence tower bridge castle
garden forest desert valley island coast beach wave wind rain snow fire earth silver
golden quiet loud quick slow bright dark sweet sour happy sad early late north south
east west spring summer autumn winter morning evening doctor farmer baker teacher
pilot sailor writer painter singer dancer runner window door floor roof wall street
market school office station harbor airport engine wheel rocket planet comet star
moon sun sky world story letter number
"""
WORD_LIST = WORDS.split()


def batch_documents(seed: int) -> list[dict[str, str]]:
    """About 200 documents: random texts, planted near-duplicate families
    (including chains of edits and exact copies up to case and punctuation),
    short texts and texts without tokens. Ids are assigned after shuffling."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets

    def random_text() -> list[str]:
        return rng.choices(WORD_LIST, k=rng.randint(12, 40))

    def edited(words: list[str], edits: int) -> list[str]:
        result = list(words)
        for _ in range(edits):
            operation = rng.choice(("substitute", "insert", "delete", "swap"))
            position = rng.randrange(len(result))
            if operation == "substitute":
                result[position] = rng.choice(WORD_LIST)
            elif operation == "insert":
                result.insert(position, rng.choice(WORD_LIST))
            elif operation == "delete" and len(result) > 3:
                del result[position]
            elif operation == "swap" and position + 1 < len(result):
                result[position], result[position + 1] = result[position + 1], result[position]
        return result

    def sentence(words: list[str]) -> str:
        return " ".join(words).capitalize() + "."

    texts: list[str] = [sentence(random_text()) for _ in range(130)]
    for _ in range(22):
        base = random_text()
        texts.append(sentence(base))
        previous = base
        for _ in range(rng.randint(1, 3)):
            source = previous if rng.random() < 0.5 else base
            previous = edited(source, rng.randint(1, 6))
            texts.append(sentence(previous))
    for _ in range(4):
        words = random_text()
        texts.append(sentence(words))
        texts.append(" ".join(words).upper() + "!!")
    texts += ["", "...", "🙂 🙂", "Hello", "hello!", "Hello world", "hello, world"]
    rng.shuffle(texts)
    return [{"id": f"doc-{i:03d}", "text": text} for i, text in enumerate(texts)]


def documents(*texts: tuple[str, str]) -> list[dict[str, str]]:
    return [{"id": doc_id, "text": text} for doc_id, text in texts]


BATCH = batch_documents(seed=20260101)

NEAR_DUPLICATE_CASES: list[tuple[str, list[dict[str, str]], float]] = [
    ("single_document", documents(("only", "a lonely document with some words")), 0.5),
    (
        "pair_and_outlier",
        documents(
            ("a", "the quick brown fox jumps over the lazy dog"),
            ("b", "the quick brown fox jumped over the lazy dog"),
            ("c", "an entirely different sentence about databases"),
        ),
        0.3,
    ),
    (
        "cluster_of_four",
        documents(
            ("v1", "one two three four five six seven eight nine ten eleven twelve"),
            ("v2", "one two three four five six seven eight nine ten eleven dozen"),
            ("v3", "zero one two three four five six seven eight nine ten eleven twelve"),
            ("v4", "One, two, three, four, five, six, seven, eight, nine, ten, eleven!"),
            ("x", "nothing in common with the others at all"),
        ),
        0.7,
    ),
    (
        "chain",
        documents(
            ("a", "w01 w02 w03 w04 w05 w06 w07 w08 w09 w10 w11 w12"),
            ("b", "w01 w02 x03 w04 w05 w06 w07 w08 w09 w10 w11 w12"),
            ("c", "w01 w02 x03 w04 w05 w06 x07 w08 w09 w10 w11 w12"),
            ("d", "w01 w02 x03 w04 w05 w06 x07 w08 w09 w10 x11 w12"),
        ),
        0.5,
    ),
    (
        "threshold_one",
        documents(
            ("p1", "Hello, World! This is a test."),
            ("p2", "hello world this is a test"),
            ("p3", "ＨＥＬＬＯ ＷＯＲＬＤ． ＴＨＩＳ ＩＳ Ａ ＴＥＳＴ"),
            ("q1", "hello world this is a test too"),
            ("r1", "東京タワーに行きました"),
            ("r2", "東京タワーに、行きました。"),
        ),
        1.0,
    ),
    (
        "jaccard_equal_to_threshold",
        documents(
            ("a", "a b c d e"),
            ("b", "a b c d f"),
            ("c", "v w x y z"),
            ("d", "v w x y q"),
        ),
        0.5,
    ),
    (
        "documents_without_tokens",
        documents(
            ("empty1", ""),
            ("empty2", ""),
            ("punct1", "... !!!"),
            ("punct2", "... !!!"),
            ("emoji", "👍🏽 🎉"),
            ("real1", "these two documents are the same"),
            ("real2", "These two documents are the same!"),
        ),
        0.5,
    ),
    (
        "short_documents",
        documents(
            ("s1", "Hello"),
            ("s2", "hello!"),
            ("s3", "hello world"),
            ("s4", "Hello, World."),
            ("s5", "world"),
        ),
        0.5,
    ),
    (
        "id_code_point_order",
        documents(
            ("é", "red green blue yellow purple orange"),
            ("b", "red green blue yellow purple orange"),
            ("B", "red green blue yellow purple"),
            ("日本", "red green blue yellow purple orange brown"),
            ("10", "red green blue yellow purple orange"),
            ("9", "cyan magenta black white"),
            ("a", "cyan magenta black white grey"),
        ),
        0.5,
    ),
    (
        "cjk_documents",
        documents(
            ("ja1", "今日は良い天気です。散歩に行きましょう。"),
            ("ja2", "今日は良い天気ですね。散歩に行きましょう。"),
            ("ko1", "오늘은 날씨가 좋습니다. 산책하러 갑시다."),
            ("ko2", "오늘은 날씨가 좋네요. 산책하러 갑시다."),
            ("zh1", "今天天气很好，我们去散步吧。"),
        ),
        0.4,
    ),
    (
        "rows_per_band_one",
        documents(
            ("a", "the cat sat on the mat and looked at the door"),
            ("b", "the cat sat on a mat and stared at the door"),
            ("c", "a dog sat on the mat and looked at the window"),
        ),
        0.2,
    ),
    (
        "rows_per_band_sixteen",
        documents(
            ("a", " ".join(WORD_LIST[:40])),
            ("b", " ".join(WORD_LIST[:40]) + " extra"),
            ("c", " ".join(WORD_LIST[:20]) + " changed " + " ".join(WORD_LIST[21:40])),
        ),
        0.95,
    ),
    (
        "lsh_miss_rows_per_band_four",
        documents(
            ("a", MISS_R4_A),
            ("b", MISS_R4_B),
            ("c", MISS_R4_A.replace("then", "east")),
        ),
        0.62,
    ),
    (
        "lsh_miss_rows_per_band_eight",
        documents(
            ("a", MISS_R8_A),
            ("b", MISS_R8_B),
            ("c", MISS_R8_A.replace("cool", "warm")),
        ),
        0.85,
    ),
    ("batch_threshold_half", BATCH, 0.5),
    ("batch_threshold_085", BATCH, 0.85),
]


def case_inputs() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(name, input) of every case, by rpc, in file order."""
    return {
        "analyze": [(name, {"text": text, "top_k": k}) for name, text, k in ANALYZE_CASES],
        "compare": [(name, {"a": a, "b": b}) for name, a, b in COMPARE_CASES],
        "find_near_duplicates": [
            (name, {"documents": docs, "threshold": t}) for name, docs, t in NEAR_DUPLICATE_CASES
        ],
    }


def build() -> dict[str, dict[str, Any]]:
    """The content of every vector file, by rpc."""
    files: dict[str, dict[str, Any]] = {}
    for rpc, cases in case_inputs().items():
        names = [name for name, _ in cases]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate case names in {rpc}")
        files[rpc] = {
            "spec_version": SPEC_VERSION,
            "cases": [
                {"name": name, "input": case_input, "expected": run_case(rpc, case_input)}
                for name, case_input in cases
            ],
        }
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a file differs instead of writing"
    )
    args = parser.parse_args(argv)
    stale = []
    for rpc, content in build().items():
        path = VECTOR_DIR / RPC_FILES[rpc]
        text = encode(content)
        if args.check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8", newline="\n")
        print(f"{path}: {len(content['cases'])} cases")
    for path in stale:
        print(f"{path} differs from what make_vectors would write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
