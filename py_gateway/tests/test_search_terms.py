# ruff: noqa: RUF001 - full-width and half-width forms are the point
"""Search values against PostgreSQL itself: rust_compute's tokens, our literals, real `@@`.

The oracle is the definition: after the spec's normalisation (NFKC, lowercase)
a query of CJK characters matches exactly the texts that contain it.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import AsyncIterator, Sequence

import grpc
import psycopg
import pytest
from nuell.compute.v1 import compute_service_pb2 as compute_pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub
from sqlalchemy.engine import URL

from nuell_gateway.search_terms import chunks, tsquery_literal, tsvector_literal
from tests.utils.database import libpq
from tests.utils.samples import HOSTILE_QUERIES


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


@pytest.fixture
async def compute(compute_address: str) -> AsyncIterator[ComputeServiceStub]:
    async with grpc.aio.insecure_channel(compute_address) as channel:
        yield ComputeServiceStub(channel)


async def _tokens(
    compute: ComputeServiceStub, texts: Sequence[str]
) -> list[list[compute_pb.Token]]:
    reply = await compute.Tokenize(compute_pb.TokenizeRequest(texts=list(texts)))
    return [list(text.tokens) for text in reply.texts]


class Index:
    """A scratch table of texts with their tsvectors, in the session's database."""

    def __init__(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self.connection = connection

    async def load(self, compute: ComputeServiceStub, texts: Sequence[str]) -> None:
        await self.connection.execute(
            "CREATE TEMP TABLE docs (id int PRIMARY KEY, body text, v tsvector)"
        )
        for start in range(0, len(texts), 500):
            batch = texts[start : start + 500]
            for offset, tokens in enumerate(await _tokens(compute, batch)):
                await self.connection.execute(
                    "INSERT INTO docs VALUES (%s, %s, %s::tsvector)",
                    (start + offset, batch[offset], tsvector_literal(tokens)),
                )

    async def search(self, compute: ComputeServiceStub, query: str) -> set[int]:
        pieces = chunks(query)
        tokens = await _tokens(compute, [piece.text for piece in pieces])
        tsquery = tsquery_literal(zip(tokens, [p.prefix for p in pieces], strict=True))
        cursor = await self.connection.execute(
            "SELECT id FROM docs WHERE v @@ %s::tsquery", (tsquery,)
        )
        return {int(str(row[0])) for row in await cursor.fetchall()}


@pytest.fixture
async def index(database_url: URL) -> AsyncIterator[Index]:
    async with await psycopg.AsyncConnection.connect(libpq(database_url), autocommit=True) as conn:
        yield Index(conn)


DOCS = [
    "東京都に住んでいます",  # 0
    "京都の寺",  # 1
    "東京・京都の旅",  # 2
    "東京京都",  # 3
    "ラーメンが好き",  # 4
    "ﾗｰﾒﾝ屋",  # 5 half-width katakana
    "Ｒｕｓｔ言語とPython",  # 6 full-width Latin
    "我爱北京天安门",  # 7 Chinese
    "한국어 문장입니다",  # 8 Korean
    "Hello, e-mail world 😀",  # 9
    "rustacean meetup in 東京",  # 10
    "字",  # 11 a one-character run
    "本字b",  # 12
    "a字本",  # 13
    "it's 3.14 o'clock \\ back",  # 14
]


async def test_cjk_words_phrases_and_prefixes(compute: ComputeServiceStub, index: Index) -> None:
    await index.load(compute, DOCS)
    cases = {
        "東京": {0, 2, 3, 10},
        "京都": {0, 1, 2, 3},
        "東京都": {0},
        "東京京都": {3},
        "東京・京都": {2},
        "ラーメン": {4, 5},
        "ﾗｰﾒﾝ": {4, 5},
        "rust": {6},
        "RUST": {6},
        "rust*": {6, 10},
        "python rust": {6},
        "北京": {7},
        "天安门": {7},
        "한국어": {8},
        "문장": {8},
        "email": set(),
        "e-mail": {9},
        '"e mail"': {9},
        '"mail e"': set(),
        "hello world": {9},
        '"hello world"': set(),
        '"e-mail world"': {9},
        '"world mail"': set(),
        "字": {11, 12, 13},
        "字b": {12},
        "a字": {13},
        "本字": {12},
        "字本": {13},
        "it's": {14},
        "3.14": {14},
        "都": {0, 1, 2, 3},
        "京": {0, 1, 2, 3, 7, 10},
    }
    for query, expected in cases.items():
        assert await index.search(compute, query) == expected, query


HOSTILE = HOSTILE_QUERIES


async def test_operators_in_queries_are_only_characters(
    compute: ComputeServiceStub, index: Index
) -> None:
    await index.load(compute, ["a b", "東京 京都", "a' b"])
    for query in HOSTILE:
        texts = [piece.text for piece in chunks(query) if piece.text]  # '"' quotes nothing
        tokens = await _tokens(compute, texts) if texts else []
        if not any(tokens):
            continue
        # No syntax error, whatever the input.
        await index.search(compute, query)


def _corpus(rng: random.Random, size: int) -> list[str]:
    alphabet = "東京都京大阪府市区町村人日本語学生先話ラメンーアイスのをにはがでとも"
    latin = ["rust", "python", "go", "ramen", "tokyo", "kyoto"]
    texts = []
    for _ in range(size):
        parts = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.7:
                parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
            else:
                parts.append(rng.choice(latin))
            parts.append(rng.choice([" ", "、", "。", "", "・", "!"]))
        texts.append("".join(parts))
    return texts


async def test_cjk_queries_find_exactly_the_substrings(
    compute: ComputeServiceStub, index: Index
) -> None:
    rng = random.Random(18)  # noqa: S311 - a reproducible corpus
    corpus = _corpus(rng, 1500)
    await index.load(compute, corpus)
    normalised = [_normalise(text) for text in corpus]
    queries: set[str] = set()
    while len(queries) < 150:
        source = rng.choice(normalised)
        runs = [run for run in source.replace("・", " ").split() if run]
        run = rng.choice(runs)
        cjk = "".join(c for c in run if "\u3040" <= c <= "\u9fff")
        if len(cjk) >= 1:
            start = rng.randrange(len(cjk))
            queries.add(cjk[start : start + rng.randint(1, 5)])
    for query in sorted(queries):
        expected = {i for i, text in enumerate(normalised) if query in text}
        assert await index.search(compute, query) == expected, query
