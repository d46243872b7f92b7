"""What the search index adds to a post write: one Tokenize with band keys.

Every CreatePost and UpdatePost asks rust_compute for the post's tokens and
band keys. That reply is a few hundred bytes; with Nagle's algorithm on the
server's socket it waited for the client's delayed ACK, 40 ms on every
write (docs/posts.md, "Measured with 1,000,000 posts"). The bound here is
far above the fraction of a millisecond the call takes, and far below 40 ms.
"""

from __future__ import annotations

import statistics
import time

import grpc
from nuell.compute.v1 import compute_service_pb2 as pb
from nuell.compute.v1.compute_service_pb2_grpc import ComputeServiceStub

POST = "東京都の新しいラーメン屋に行きました。Rustで書いたWebサーバーの話も"


async def test_tokenize_with_band_keys_does_not_wait_for_a_delayed_ack(
    compute_address: str,
) -> None:
    async with grpc.aio.insecure_channel(compute_address) as channel:
        compute = ComputeServiceStub(channel)
        request = pb.TokenizeRequest(texts=[POST], band_keys=True)
        reply = await compute.Tokenize(request)  # connects
        assert len(reply.texts[0].band_keys) == 42
        times = []
        for _ in range(15):
            began = time.perf_counter()
            await compute.Tokenize(request)
            times.append(time.perf_counter() - began)
    assert statistics.median(times) < 0.02, times
