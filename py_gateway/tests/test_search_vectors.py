# ruff: noqa: RUF001 - full-width forms are the point
"""The search vectors (proto/testdata/compute/v1/search/): the reference writes them, the
real rust_compute reproduces them byte for byte, and the gateway forwards them unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub

from tests.reference import search_reference, search_vectors

FILES = {
    name: json.loads((search_vectors.SEARCH_DIR / name).read_text("utf-8"))
    for name in ("tokenize.json", "compare_many.json")
}


def test_the_files_are_what_the_reference_writes() -> None:
    for name, document in search_vectors.documents().items():
        assert FILES[name] == document, name


@pytest.fixture
async def compute(compute_address: str) -> AsyncIterator[ComputeServiceStub]:
    async with grpc.aio.insecure_channel(compute_address) as channel:
        yield ComputeServiceStub(channel)


def _tokenized(reply: pb.TokenizeResponse) -> list[dict[str, Any]]:
    return [
        {
            "tokens": [
                {
                    "term": token.term,
                    "position": token.position,
                    "kind": pb.TokenKind.Name(token.kind).removeprefix("TOKEN_KIND_"),
                }
                for token in text.tokens
            ],
            "band_keys": [str(key) for key in text.band_keys],
        }
        for text in reply.texts
    ]


@pytest.mark.parametrize("case", FILES["tokenize.json"]["cases"], ids=lambda case: case["name"])
async def test_rust_compute_tokenizes_as_the_vectors_say(
    compute: ComputeServiceStub, case: dict[str, Any]
) -> None:
    request = json_format.ParseDict(
        {"texts": case["input"]["texts"], "bandKeys": case["input"]["band_keys"]},
        pb.TokenizeRequest(),
    )
    assert _tokenized(await compute.Tokenize(request)) == case["expected"]["texts"]


@pytest.mark.parametrize("case", FILES["compare_many.json"]["cases"], ids=lambda case: case["name"])
async def test_rust_compute_compares_many_as_the_vectors_say(
    compute: ComputeServiceStub, case: dict[str, Any]
) -> None:
    request = pb.CompareManyRequest(text=case["input"]["text"], others=case["input"]["others"])
    reply = await compute.CompareMany(request)
    assert list(reply.jaccards) == case["expected"]["jaccards"]


async def test_random_texts_agree_with_the_reference(compute: ComputeServiceStub) -> None:
    texts = [
        "ｶﾀｶﾅと漢字とhiragana、混ぜた文章！ Ünïcödé façade 3.14",
        "서울・부산 KTX で 2時間半",
        "ΣΊΣΥΦΟΣ's ﬁnal straße",
        "a" * 3000 + " 日本" * 200,
    ]
    reply = await compute.Tokenize(pb.TokenizeRequest(texts=texts, band_keys=True))
    assert _tokenized(reply) == search_reference.tokenize(texts, True)


async def test_limits_are_invalid_argument(compute: ComputeServiceStub) -> None:
    for request in (
        pb.TokenizeRequest(),
        pb.TokenizeRequest(texts=["a"] * 1001),
        pb.TokenizeRequest(texts=["ok", "x" * 65537]),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await compute.Tokenize(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await compute.CompareMany(pb.CompareManyRequest(text="x" * 65537, others=["a"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
