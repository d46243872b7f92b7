"""The scenarios as data: what each calls with which requests, on which part of
the stack, how hard, and which table prints it. Adding one is one entry in SCENARIOS."""

import argparse
import itertools
import os
import random
import string
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


# Made in the load driver's process, so a module-level function (pickled by name).
Requests = Callable[[Fixture, random.Random], Iterator[bytes]]


@dataclass(frozen=True)
class Call:
    """One RPC, as a ghz config names it: the method, its data, its metadata."""

    name: str
    method: str
    data: bytes | Requests = b""  # the same serialized request every time, or each made anew
    authorized: bool = True  # sends `authorization: Bearer <the account's token>`
    # A chain: each caller first makes `opener` once (unmeasured), then every
    # request is `chain(the last reply)`, so it always presents what it was last given.
    opener: "Call | None" = None
    chain: Callable[[bytes], bytes] | None = None

    def requests(self, fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
        data = self.data
        return itertools.repeat(data) if isinstance(data, bytes) else data(fixture, rng)


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
    bucket: float = 0.0  # open loop: also summarized (and the stack sampled) this often
    channels: int = 8  # connections the client spreads its calls over
    seed: int = 1  # of the RNG that picks each call of a mix


@dataclass(frozen=True)
class Scenario:
    name: str  # what --only takes
    label: str  # its row or heading
    calls: tuple[Call, ...]
    targets: tuple[str, ...]  # the stack's services it dials, one leg each (bench/stack.py)
    load: str = "closed"  # a key of loads()
    report: str = "row"  # the Report method that prints it


def loads(a: argparse.Namespace) -> dict[str, Load]:
    closed = Load(a.duration, a.warmup, a.concurrency, channels=a.channels, seed=a.seed)
    mix = replace(closed, concurrency=0, timeout=a.mix_timeout, weights=a.mix_weights)
    soak = replace(mix, rates=(a.soak_rate,), bucket=SAMPLE_S)
    return {
        "closed": closed,
        "argon2": replace(closed, concurrency=a.login_concurrency),
        "rounds": replace(closed, duration=a.edge_duration, rounds=a.edge_rounds),
        "paced": replace(mix, duration=a.duration, rates=(a.paced_rate,), weights={}),
        "mix": replace(mix, duration=a.mix_duration, concurrency=a.mix_concurrency),
        "sweep": replace(mix, duration=a.step_duration, rates=tuple(a.rates)),
        "soak": replace(soak, duration=a.soak, warmup=min(SAMPLE_S, a.soak / 4)),
    }


def _words(rng: random.Random, count: int) -> str:
    # Random letters: two posts of 24 such words share no 3-word shingle, so
    # the near-duplicate rule never refuses one.
    letters = string.ascii_lowercase
    return " ".join("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(count))


def login(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    request = auth_service_pb2.LoginRequest(email=fixture.email, password=PASSWORD)
    return itertools.repeat(request.SerializeToString())


def newest_refresh_token(reply: bytes) -> bytes:
    """A Refresh with the token a Login or Refresh answered (field 4 in both replies)."""
    token = auth_service_pb2.RefreshResponse.FromString(reply).refresh_token
    request = auth_service_pb2.RefreshRequest(refresh_token=token)
    return bytes(request.SerializeToString())


def registrations(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    """A new address each time: each one a verification mail through the outbox and SMTP."""
    nonce = f"{os.getpid()}-{time.time_ns()}"
    for n in itertools.count(1):
        email = f"bench-{nonce}-{n}@example.com"
        yield auth_service_pb2.RegisterRequest(email=email, password=PASSWORD).SerializeToString()


def every_post(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    """Each benchmark post in turn, as readers of a feed would ask."""
    ids = fixture.post_ids
    return itertools.cycle([post_service_pb2.GetPostRequest(id=i).SerializeToString() for i in ids])


def new_posts(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    nonce = f"{os.getpid()}-{time.time_ns()}"  # unique across runs: the posts stay
    for n in itertools.count(1):
        content = f"Mix post {n} ({nonce}): {_words(rng, 24)}."
        yield post_service_pb2.CreatePostRequest(content=content).SerializeToString()


def texts(fixture: Fixture, rng: random.Random) -> Iterator[bytes]:
    """One of 32 texts of 500 characters, at random."""
    requests = [compute_service_pb2.AnalyzeRequest(text=_words(rng, 120)[:500]) for _ in range(32)]
    return (rng.choice(requests).SerializeToString() for _ in itertools.count())


ECHO = Call("Echo", "/nuell.bench.v1.EchoService/Echo", bytes(range(128)), authorized=False)
HEALTH = Call("Health", "/grpc.health.v1.Health/Check", authorized=False)
USER = Call("GetCurrentUser", "/nuell.users.v1.UserService/GetCurrentUser")
GET_POST = Call("GetPost", "/nuell.posts.v1.PostService/GetPost", every_post)
LIST_POSTS = Call(
    "ListPosts",
    "/nuell.posts.v1.PostService/ListPosts",
    post_service_pb2.ListPostsRequest(page_size=50).SerializeToString(),
)
LOGIN = Call("Login", "/nuell.auth.v1.AuthService/Login", login, authorized=False)
REFRESH = Call(
    "Refresh",
    "/nuell.auth.v1.AuthService/Refresh",
    authorized=False,
    opener=LOGIN,
    chain=newest_refresh_token,
)
REGISTER = Call("Register", "/nuell.auth.v1.AuthService/Register", registrations, authorized=False)
MIX = (
    LOGIN,
    replace(LIST_POSTS, data=post_service_pb2.ListPostsRequest(page_size=20).SerializeToString()),
    GET_POST,
    Call("CreatePost", "/nuell.posts.v1.PostService/CreatePost", new_posts),
    Call("Analyze", "/nuell.compute.v1.ComputeService/Analyze", texts),
)
BOTH = ("gateway", "edge")  # direct, and via the edge

SCENARIOS = (
    # The ceilings: a bare grpc.aio server, one process and as many as the gateway.
    Scenario("echo-1", "echo (bare, 1 process)", (ECHO,), ("echo-1",)),
    Scenario("echo", "echo (bare grpc.aio)", (ECHO,), ("echo",)),
    Scenario("health", "Health/Check direct", (HEALTH,), ("gateway",)),
    Scenario("user", "GetCurrentUser direct", (USER,), ("gateway",)),
    Scenario("user-envoy", "GetCurrentUser via Envoy", (USER,), ("edge",)),
    Scenario("get-post", "GetPost direct", (GET_POST,), ("gateway",)),
    Scenario("get-post-envoy", "GetPost via Envoy", (GET_POST,), ("edge",)),
    # Through an Envoy with a router only: what any edge costs here.
    Scenario("get-post-bare-envoy", "GetPost via bare Envoy", (GET_POST,), ("bare-edge",)),
    Scenario("list-posts", "ListPosts (50) direct", (LIST_POSTS,), ("gateway",)),
    Scenario("login", "Login direct", (LOGIN,), ("gateway",), load="argon2"),
    # At Login's concurrency, so the two rows compare; each caller logs in once, then refreshes.
    Scenario("refresh", "Refresh direct (a chain)", (REFRESH,), ("gateway",), load="argon2"),
    Scenario("register-mail", "Register with mail on", (REGISTER,), ("gateway",), load="argon2"),
    Scenario("edge-cost", "GetPost direct and via Envoy", (GET_POST,), BOTH, "rounds", "paths"),
    Scenario("get-post-paced", "GetPost at equal load", (GET_POST,), BOTH, "paced", "paths"),
    Scenario("mix-envoy", "mix via Envoy", MIX, ("edge-mix",), "mix", "mix"),
    Scenario("sweep-envoy", "mix via Envoy, offered load", MIX, ("edge-mix",), "sweep", "sweep"),
    # Timed calls, not a load: bench/near_duplicates.py and bench/watch.py run them.
    Scenario("near-duplicates", "FindNearDuplicates beside rensa and datasketch", (), ("gateway",)),
    Scenario("watch", "WatchPosts fan-out while posts are written", (), ("gateway",)),
)
# Only with --soak SECONDS.
SOAK = Scenario("soak", "soak, the mix via Envoy", MIX, ("edge-mix",), "soak", "soak")
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
