"""The scenarios, as data: what each one calls, with which requests, on which
part of the stack, how hard, and which table prints it (bench/README.md).

Adding a scenario is one `Scenario(...)` entry in SCENARIOS; a new request is
one generator function beside the others.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from nuell.auth.v1 import auth_service_pb2  # type: ignore[import-untyped]
from nuell.compute.v1 import compute_service_pb2  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2  # type: ignore[import-untyped]

PASSWORD = "Correct-Horse-42"  # noqa: S105 - the benchmark account's, in a throwaway database
BENCH_POSTS = 200  # the posts the post scenarios read: several full pages
SAMPLE_S = 5.0  # the soak samples memory and connections this often


@dataclass(frozen=True)
class Fixture:
    """What the stack holds for the scenarios: the benchmark account and its posts."""

    email: str = ""
    access_token: str = ""
    post_ids: tuple[str, ...] = ()


# Serialized requests, one per call, made in the load driver's process (so a
# module-level function, which pickles by name).
Requests = Callable[[Fixture, random.Random], Iterator[bytes]]


@dataclass(frozen=True)
class Call:
    """One RPC, as a ghz config names it: the method, its data, its metadata."""

    name: str
    method: str
    requests: Requests
    authorized: bool = True  # sends `authorization: Bearer <the account's token>`


@dataclass(frozen=True)
class Load:
    """How hard: closed loop (`concurrency` calls in flight for `duration`
    seconds) or open loop (`rates` calls a second, `duration` seconds each)."""

    duration: float
    warmup: float
    concurrency: int = 0
    rates: tuple[float, ...] = ()
    timeout: float = 30.0  # each call's deadline
    weights: Mapping[str, int] = field(default_factory=dict)  # per Call.name; empty: alike
    rounds: int = 1  # legs per target, taken in turn
    pause: float = 1.0  # open loop: idle seconds between rates
    bucket: float = 0.0  # open loop: also summarized (and the stack sampled) this often


@dataclass(frozen=True)
class Scenario:
    name: str  # what --only takes
    label: str  # its row or heading
    calls: tuple[Call, ...]
    targets: tuple[str, ...]  # the stack's services it dials, one leg each (bench/stack.py)
    load: str  # a key of loads()
    report: str  # a key of report.PRINTERS


def loads(args: argparse.Namespace) -> dict[str, Load]:
    closed = Load(args.duration, args.warmup, concurrency=args.concurrency)
    mix = Load(args.step_duration, args.warmup, timeout=args.mix_timeout, weights=args.mix_weights)
    return {
        "closed": closed,
        "argon2": replace(closed, concurrency=args.login_concurrency),
        "rounds": replace(closed, duration=args.edge_duration, rounds=args.edge_rounds),
        "paced": replace(mix, duration=args.duration, rates=(args.paced_rate,), weights={}),
        "mix": replace(mix, duration=args.mix_duration, concurrency=args.mix_concurrency),
        "sweep": replace(mix, rates=tuple(args.rates)),
        "soak": replace(
            mix,
            duration=args.soak,
            warmup=min(SAMPLE_S, args.soak / 4),
            rates=(args.soak_rate,),
            pause=0.0,
            bucket=SAMPLE_S,
        ),
    }


# --- requests -------------------------------------------------------------------

_WORDS = """river morning coffee station window garden letter winter market bridge quiet
yellow number paper travel island signal pocket orange circle doctor engine forest holiday
kitchen ladder mountain needle ocean pencil rabbit silver ticket umbrella valley wagon yogurt
zebra anchor basket candle dragon feather guitar harbor jacket kettle lemon mirror napkin
orchid parrot quilt rocket saddle tunnel velvet walnut blanket cactus dolphin elbow fabric
glacier hammer igloo jungle koala lantern magnet nectar olive pepper quartz radar sponge
thunder unicorn violin whistle bakery canyon desert empire falcon goblet hollow insect jigsaw
kayak lobster meadow nickel oyster puzzle raisin sketch timber vessel wizard acorn beacon
cobalt dinner ember fossil gravel hazel ivory juniper kernel lilac marble nutmeg onion pebble
radish saffron tulip urchin vanilla willow almond barley cedar daisy fennel ginger"""
WORDS = tuple(_WORDS.split())


def _words(rng: random.Random, count: int) -> str:
    # Enough words that two random 24-word posts share no 3-word shingle, so
    # the near-duplicate rule never refuses one.
    return " ".join(rng.choice(WORDS) for _ in range(count))


def nothing(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    return itertools.repeat(b"")


def echo_bytes(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    return itertools.repeat(bytes(range(128)))  # about a GetCurrentUser reply's size


def login(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    request = auth_service_pb2.LoginRequest(email=fixture.email, password=PASSWORD)
    return itertools.repeat(request.SerializeToString())


def every_post(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    """Each benchmark post in turn, as readers of a feed would ask."""
    ids = fixture.post_ids
    return itertools.cycle([post_service_pb2.GetPostRequest(id=i).SerializeToString() for i in ids])


def _page(size: int) -> Iterator[bytes]:
    return itertools.repeat(post_service_pb2.ListPostsRequest(page_size=size).SerializeToString())


def page_of_20(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    return _page(20)


def page_of_50(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    return _page(50)


def new_posts(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    nonce = f"{os.getpid()}-{time.time_ns()}"  # unique across runs: the posts stay
    for n in itertools.count(1):
        content = f"Mix post {n} ({nonce}): {_words(rng, 24)}."
        yield post_service_pb2.CreatePostRequest(content=content).SerializeToString()


def texts(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    """One of 32 texts of 500 characters, at random."""
    requests = [
        compute_service_pb2.AnalyzeRequest(text=_words(rng, 100)[:500]).SerializeToString()
        for _ in range(32)
    ]
    while True:
        yield rng.choice(requests)


# --- the scenarios --------------------------------------------------------------

ECHO = Call("Echo", "/nuell.bench.v1.EchoService/Echo", echo_bytes, authorized=False)
HEALTH = Call("Health", "/grpc.health.v1.Health/Check", nothing, authorized=False)
USER = Call("GetCurrentUser", "/nuell.users.v1.UserService/GetCurrentUser", nothing)
GET_POST = Call("GetPost", "/nuell.posts.v1.PostService/GetPost", every_post)
LIST_POSTS = "/nuell.posts.v1.PostService/ListPosts"
LOGIN = Call("Login", "/nuell.auth.v1.AuthService/Login", login, authorized=False)
MIX = (
    LOGIN,
    Call("ListPosts", LIST_POSTS, page_of_20),
    GET_POST,
    Call("CreatePost", "/nuell.posts.v1.PostService/CreatePost", new_posts),
    Call("Analyze", "/nuell.compute.v1.ComputeService/Analyze", texts),
)

SCENARIOS = (
    # The ceilings: a bare grpc.aio server, one process and as many as the gateway.
    Scenario("echo-1", "echo (bare, 1 process)", (ECHO,), ("echo-1",), "closed", "row"),
    Scenario("echo", "echo (bare grpc.aio)", (ECHO,), ("echo",), "closed", "row"),
    Scenario("health", "Health/Check direct", (HEALTH,), ("gateway",), "closed", "row"),
    Scenario("user", "GetCurrentUser direct", (USER,), ("gateway",), "closed", "row"),
    Scenario("user-envoy", "GetCurrentUser via Envoy", (USER,), ("edge",), "closed", "row"),
    Scenario("get-post", "GetPost direct", (GET_POST,), ("gateway",), "closed", "row"),
    Scenario("get-post-envoy", "GetPost via Envoy", (GET_POST,), ("edge",), "closed", "row"),
    # Through an Envoy with a router only: the floor of any edge here.
    Scenario(
        "get-post-bare-envoy",
        "GetPost via bare Envoy",
        (GET_POST,),
        ("bare-edge",),
        "closed",
        "row",
    ),
    Scenario(
        "list-posts",
        "ListPosts (50) direct",
        (Call("ListPosts", LIST_POSTS, page_of_50),),
        ("gateway",),
        "closed",
        "row",
    ),
    Scenario("login", "Login direct", (LOGIN,), ("gateway",), "argon2", "row"),
    # Direct and via Envoy in alternating rounds: each one's CPU per call.
    Scenario(
        "edge-cost",
        "GetPost direct and via Envoy",
        (GET_POST,),
        ("gateway", "edge"),
        "rounds",
        "edge",
    ),
    Scenario(
        "get-post-paced",
        "GetPost at equal offered load",
        (GET_POST,),
        ("gateway", "edge"),
        "paced",
        "paced",
    ),
    Scenario("mix-envoy", "mix via Envoy", MIX, ("edge-mix",), "mix", "mix"),
    Scenario("sweep-envoy", "mix via Envoy, offered load", MIX, ("edge-mix",), "sweep", "sweep"),
)
# Only with --soak SECONDS.
SOAK = Scenario("soak", "soak, the mix via Envoy", MIX, ("edge-mix",), "soak", "soak")
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
