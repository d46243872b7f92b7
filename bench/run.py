"""End-to-end load runs against the real stack (`make bench`).

    .venv/bin/python bench/run.py [--duration S] [--concurrency N] [--only NAME]...

Starts, on free loopback ports: a throwaway PostgreSQL database (a fresh one
on the server at TEST_DATABASE_URL, else DATABASE_URL, dropped at the end;
else an embedded server in a temporary folder), migrated with
`nuell_gateway migrate`; rust_compute; py_gateway; Envoy in front of it,
configured by deploy/render.py from deploy/settings.py; and
bench/echo_server.py, the ceiling for Python gRPC on this machine, with as
many worker processes as the gateway (`--workers`, default NUELL_WORKERS,
else one per core, the gateway's own default). Only what the chosen
scenarios need is started.

Each scenario is one run of bench/load.py, in a process of its own, with the
same settings. The mix through Envoy (mix-envoy, sweep-envoy, and --soak) is
bench/mix.py's, with the edge's Login/Register rate limit raised for it; its
charts are saved next to the JSON file (bench/charts.py). The figures are
printed as a table, followed by the ratios that matter, and saved to
bench/results/<UTC timestamp>.json. Children are stopped and the database
dropped at the end, on Ctrl-C and on failure too; on failure the children's
logs are kept and their folder named.

Process handling is deploy/local/run_stack.py's (the runner behind
`make run`); the Envoy config is deploy/render.py's. NUELL_* tuning
variables in the environment (NUELL_DB_POOL_SIZE, ...) reach the gateway;
its addresses, signing key and database are the benchmark's own.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import grpc  # type: ignore[import-untyped]
import psutil
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc  # type: ignore[import-untyped]
from nuell.compute.v1 import compute_service_pb2  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2, post_service_pb2_grpc  # type: ignore[import-untyped]
from nuell.users.v1 import user_service_pb2  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LOAD = BENCH / "load.py"
BARE_ENVOY = BENCH / "bare_envoy.yaml"
MIX = BENCH / "mix.py"
ECHO_SERVER = BENCH / "echo_server.py"
sys.path[:0] = [str(REPO / "deploy" / "local"), str(REPO / "deploy")]

import charts  # noqa: E402
import mix_report  # noqa: E402
import run_stack  # type: ignore[import-not-found]  # noqa: E402
from render import write_envoy  # type: ignore[import-not-found]  # noqa: E402
from settings import Address, SettingsError, StackSettings  # type: ignore[import-not-found]  # noqa: E402

ECHO_METHOD = "/nuell.bench.v1.EchoService/Echo"
ECHO_PAYLOAD = bytes(range(128))  # about the size of a GetCurrentUser reply
HEALTH_METHOD = "/grpc.health.v1.Health/Check"
CURRENT_USER_METHOD = "/nuell.users.v1.UserService/GetCurrentUser"
GET_POST_METHOD = "/nuell.posts.v1.PostService/GetPost"
LIST_POSTS_METHOD = "/nuell.posts.v1.PostService/ListPosts"
LOGIN_METHOD = "/nuell.auth.v1.AuthService/Login"
PASSWORD = "Correct-Horse-42"  # noqa: S105 - the benchmark account's, in a throwaway database
ECHO_LISTENING = re.compile(r"^echo_server listening on (\S+)\s*$", re.MULTILINE)
STARTUP_TIMEOUT = 90.0  # two cores, and the embedded server's initdb on first use
# Set in the load driver's environment, so the token stays out of the process list.
AUTHORIZATION_VARIABLE = "NUELL_BENCH_AUTHORIZATION"
PASSWORD_VARIABLE = "NUELL_BENCH_PASSWORD"  # noqa: S105 - a variable's name
# The edge's per-client limit on Login and Register (deploy/settings.py)
# would refuse the mix's logins, all from one address: raised for the mix's
# Envoy unless these variables are set already.
EDGE_AUTH_LIMIT = {"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "1200", "NUELL_EDGE_AUTH_BURST": "10000"}
SOAK_SAMPLE_S = 5.0


@dataclass(frozen=True)
class Scenario:
    name: str  # what --only takes
    label: str  # the table's row
    needs: frozenset[str]  # parts of the stack: echo, gateway, edge, user
    argon2_bound: bool = False  # runs at --login-concurrency
    mix: bool = False  # a run of bench/mix.py through the edge (run_mix_family)
    paced: bool = False  # open loop, direct and through the edge (compare_paced)
    edge_cost: bool = False  # GetPost direct and via Envoy in turn, two layouts (compare_edge)


SCENARIOS = (
    # The ceiling: a bare grpc.aio server, one process.
    Scenario("echo-1", "echo (bare, 1 process)", frozenset({"echo-1"})),
    Scenario("echo", "echo (bare grpc.aio)", frozenset({"echo"})),
    Scenario("health", "Health/Check direct", frozenset({"gateway"})),
    Scenario("user", "GetCurrentUser direct", frozenset({"gateway", "user"})),
    Scenario("user-envoy", "GetCurrentUser via Envoy", frozenset({"gateway", "edge", "user"})),
    Scenario("get-post", "GetPost direct", frozenset({"gateway", "user", "posts"})),
    Scenario(
        "get-post-envoy", "GetPost via Envoy", frozenset({"gateway", "edge", "user", "posts"})
    ),
    # The same through an Envoy with a router only: the floor of any edge here.
    Scenario(
        "get-post-bare-envoy",
        "GetPost via bare Envoy",
        frozenset({"gateway", "bare-edge", "user", "posts"}),
    ),
    # get-post and get-post-envoy again, in alternating short rounds so the
    # machine's drift falls on both alike, with every process sharing every
    # CPU and then with the gateway on CPUs of its own: the edge's cost.
    Scenario(
        "edge-cost",
        "GetPost direct and via Envoy in turn",
        frozenset({"gateway", "user", "posts"}),
        edge_cost=True,
    ),
    # GetPost at one offered load, direct then via Envoy: the edge's cost at equal load.
    Scenario(
        "get-post-paced",
        "GetPost at equal offered load",
        frozenset({"gateway", "user", "posts"}),
        paced=True,
    ),
    Scenario("list-posts", "ListPosts (50) direct", frozenset({"gateway", "user", "posts"})),
    Scenario("login", "Login direct", frozenset({"gateway", "user"}), argon2_bound=True),
    # The end-to-end mix through the edge: closed loop, then open-loop rates.
    Scenario("mix-envoy", "mix via Envoy", frozenset({"gateway", "user", "posts"}), mix=True),
    Scenario(
        "sweep-envoy",
        "mix via Envoy, offered load",
        frozenset({"gateway", "user", "posts"}),
        mix=True,
    ),
)
# What puts an Envoy in front of the gateway for a scenario.
EDGES = frozenset({"edge", "bare-edge"})
# Posts the post scenarios read: enough for several full pages.
BENCH_POSTS = 200
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


class BenchError(Exception):
    """The run cannot go on; the message says why."""


@dataclass(frozen=True)
class Load:
    """What one scenario's driver sends, where, and whose CPU it watches."""

    target: str
    method: str
    request: bytes = b""
    # Further requests sent in turn with `request` (different posts to read).
    more_requests: tuple[bytes, ...] = ()
    authorization: str | None = None
    watch: Mapping[str, int] = field(default_factory=dict)
    # The watched server whose workers get equal shares of the client's connections.
    balance_over: str | None = None


@dataclass
class Running:
    """What has been started so far; `Stack` is run_stack's."""

    stack: Any
    env: dict[str, str]
    # A key for this run only: nothing outside it can mint a token the gateway accepts.
    jwt_keys: str = field(default_factory=lambda: f"bench:{secrets.token_urlsafe(36)}")
    database: str = "none"
    postgres_pid: int | None = None
    echo: str | None = None
    echo_pid: int | None = None
    echo_1: str | None = None
    echo_1_pid: int | None = None
    post_id: str | None = None
    post_ids: list[str] = field(default_factory=list)
    compute_pid: int | None = None
    gateway: str | None = None
    gateway_pid: int | None = None
    edge: str | None = None
    edge_pid: int | None = None
    email: str | None = None
    access_token: str | None = None


# --- helpers ------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def libpq_url(url: str) -> str:
    """SQLAlchemy-style `postgresql+driver://` URLs as libpq wants them."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pids(**named: int | None) -> dict[str, int]:
    return {name: pid for name, pid in named.items() if pid is not None}


def say(text: str) -> None:
    print(text, flush=True)


# --- the stack ------------------------------------------------------------------


def start_database(run: Running, cleanup: ExitStack) -> str:
    """A fresh, migrated database; dropped (or deleted with its server) at the end."""
    import psycopg
    from psycopg import sql

    server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if server_url:
        run.database = f"server at {run_stack.redact(server_url)}"
        say(f"database: a fresh one on {run_stack.redact(server_url)}")
    else:
        from nuell_gateway.db.embedded import (
            start_embedded_postgres,
        )

        data_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-pg-"))
        # atexit runs last-in first-out: this runs after pgserver has stopped the server.
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        say("database: embedded PostgreSQL in a temporary folder")
        server_url = str(start_embedded_postgres(data_dir, delete_on_exit=True))
        run.database = "embedded"
        run.postgres_pid = postmaster_pid(data_dir)

    name = f"nuell_bench_{uuid.uuid4().hex[:12]}"
    admin_url = libpq_url(server_url)
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(
            f"cannot create a database on {run_stack.redact(server_url)} ({reason})"
        ) from None

    def drop() -> None:
        stop_children(run)  # the gateway first, so nothing is connected
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        except psycopg.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"bench: could not drop database {name} ({reason})", file=sys.stderr)

    cleanup.callback(drop)
    database_url = with_database(server_url, name)

    say("applying migrations")
    migrate = run.stack.spawn(
        "migrate",
        [sys.executable, "-m", "nuell_gateway", "migrate"],
        run.env | {"DATABASE_URL": database_url, "NUELL_JWT_KEYS": run.jwt_keys},
        5,
    )
    if (code := run.stack.wait_exit(migrate)) != 0:
        raise migrate.died(code)
    run.stack.children.remove(migrate)
    return database_url


def start_echo(run: Running, workers: int) -> tuple[str, int]:
    """An echo server with `workers` processes: its address and pid."""
    name = f"echo_server_{workers}"
    say(f"starting echo_server ({workers} process(es))")
    argv = [sys.executable, str(ECHO_SERVER), "--addr", "127.0.0.1:0", "--workers", str(workers)]
    child = run.stack.spawn(name, argv, run.env, 10)

    def bound() -> str | None:
        text = child.log_path.read_text(encoding="utf-8", errors="replace")
        return match.group(1) if (match := ECHO_LISTENING.search(text)) else None

    return str(run.stack.wait_until(child, "ready to listen", bound)), child.process.pid


def start_gateway(run: Running, cleanup: ExitStack, workers: int) -> None:
    compute_bin = run_stack.find_compute_binary()
    database_url = start_database(run, cleanup)

    say("starting rust_compute")
    compute = run.stack.spawn(
        "rust_compute",
        [str(compute_bin), "--addr", "127.0.0.1:0"],
        run.env | {"NUELL_COMPUTE_METRICS_ADDR": "127.0.0.1:0"},
        10,
    )
    compute_at = run.stack.listening_address(compute)
    run.stack.wait_healthy(compute, compute_at.connect_target)
    run.compute_pid = compute.process.pid

    say("starting py_gateway")
    gateway_env = run.env | {
        "DATABASE_URL": database_url,
        "NUELL_GATEWAY_ADDR": "127.0.0.1:0",
        "NUELL_METRICS_ADDR": "127.0.0.1:0",
        "NUELL_COMPUTE_TARGET": compute_at.connect_target,
        "NUELL_JWT_KEYS": run.jwt_keys,
        "NUELL_WORKERS": str(workers),
    }
    gateway = run.stack.spawn(
        "py_gateway", [sys.executable, "-m", "nuell_gateway", "serve"], gateway_env, 15
    )
    gateway_at = run.stack.listening_address(gateway)
    run.stack.wait_healthy(gateway, gateway_at.connect_target)
    run.gateway = gateway_at.connect_target
    run.gateway_pid = gateway.process.pid


def start_edge(run: Running, work_dir: Path, extra: Mapping[str, str] | None = None) -> Any:
    """Envoy in front of the gateway; returns its run_stack child. `extra`:
    more of deploy/settings.py's variables (the mix's Login rate limit)."""
    assert run.gateway is not None
    # Free ports through the variables deploy/settings.py reads, as `make run` would.
    settings = StackSettings.from_env(
        {
            "NUELL_EDGE_HTTP_PORT": str(free_port()),
            "NUELL_EDGE_HTTPS_PORT": str(free_port()),
            "NUELL_EDGE_ADMIN_PORT": str(free_port()),
            "NUELL_GATEWAY_ADDR": run.gateway,
            # The TLS listener's development certificate: this run's own.
            "NUELL_DATA_DIR": str(work_dir / "edge-data"),
            **(extra or {}),
        }
    )
    run_stack.make_dev_certificate(settings)
    # The edge listens on every interface by default; a benchmark needs loopback only.
    settings = dataclasses.replace(
        settings, edge_http=Address("127.0.0.1", settings.edge_http.port)
    )
    config = write_envoy(settings, work_dir / "envoy.yaml")

    return spawn_edge(run, config, settings)


def start_bare_edge(run: Running, work_dir: Path) -> Any:
    """bench/bare_envoy.yaml in front of the gateway, with the edge's worker
    threads; returns its run_stack child."""
    assert run.gateway is not None
    settings = StackSettings.from_env(
        {
            "NUELL_EDGE_HTTP_PORT": str(free_port()),
            "NUELL_EDGE_ADMIN_PORT": str(free_port()),
            "NUELL_GATEWAY_ADDR": run.gateway,
        }
    )
    gateway_host, _, gateway_port = run.gateway.rpartition(":")
    config = work_dir / "bare-envoy.yaml"
    config.write_text(
        string.Template(BARE_ENVOY.read_text(encoding="utf-8")).substitute(
            admin_port=settings.edge_admin.port,
            listen_port=settings.edge_http.port,
            gateway_host=gateway_host,
            gateway_port=gateway_port,
        ),
        encoding="utf-8",
    )
    settings = dataclasses.replace(
        settings, edge_http=Address("127.0.0.1", settings.edge_http.port)
    )
    return spawn_edge(run, config, settings)


def spawn_edge(run: Running, config: Path, settings: StackSettings) -> Any:
    envoy = run_stack.find_envoy()
    edge = run.stack.spawn("envoy", run_stack.envoy_argv(envoy, config, settings), run.env, 10)
    run.stack.wait_until(edge, "ready", lambda: run_stack.admin_ready(settings.edge_admin))
    run.edge = settings.edge_http.connect_target
    run.stack.wait_healthy(edge, run.edge)
    run.edge_pid = edge.process.pid
    return edge


def create_user(run: Running) -> None:
    """Register and log in the account the authenticated scenarios use."""
    assert run.gateway is not None
    run.email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    with grpc.insecure_channel(run.gateway) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        try:
            auth.Register(
                auth_service_pb2.RegisterRequest(email=run.email, password=PASSWORD), timeout=30
            )
            reply = auth.Login(
                auth_service_pb2.LoginRequest(email=run.email, password=PASSWORD), timeout=30
            )
        except grpc.RpcError as exc:
            raise BenchError(
                f"registering the benchmark account failed: {exc.code().name}: {exc.details()}"
            ) from None
    run.access_token = reply.access_token


def create_posts(run: Running) -> None:
    """The posts the post scenarios read, written by the benchmark account."""
    assert run.gateway is not None
    metadata = (("authorization", f"Bearer {run.access_token}"),)
    with grpc.insecure_channel(run.gateway) as channel:
        posts = post_service_pb2_grpc.PostServiceStub(channel)
        try:
            for n in range(BENCH_POSTS):
                reply = posts.CreatePost(
                    post_service_pb2.CreatePostRequest(
                        content=f"Benchmark post {n}: an ordinary sentence or two of text, "
                        f"long enough to look like a real post in a feed."
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                run.post_ids.append(reply.post.id)
        except grpc.RpcError as exc:
            raise BenchError(
                f"writing the benchmark posts failed: {exc.code().name}: {exc.details()}"
            ) from None
    run.post_id = reply.post.id


# --- scenarios ------------------------------------------------------------------


def load_for(scenario: Scenario, run: Running) -> Load:
    if scenario.name == "echo":
        assert run.echo is not None
        watch = pids(echo=run.echo_pid)
        return Load(run.echo, ECHO_METHOD, ECHO_PAYLOAD, watch=watch, balance_over="echo")
    if scenario.name == "echo-1":
        assert run.echo_1 is not None
        return Load(run.echo_1, ECHO_METHOD, ECHO_PAYLOAD, watch=pids(echo=run.echo_1_pid))
    assert run.gateway is not None
    backend = pids(gateway=run.gateway_pid, postgres=run.postgres_pid)
    bearer = f"Bearer {run.access_token}"
    if scenario.name == "health":
        return Load(run.gateway, HEALTH_METHOD, watch=backend, balance_over="gateway")
    if scenario.name == "user":
        return Load(
            run.gateway,
            CURRENT_USER_METHOD,
            authorization=bearer,
            watch=backend,
            balance_over="gateway",
        )
    if scenario.name == "user-envoy":
        # Not balanced: Envoy's own upstream connections reach the gateway's
        # workers wherever the kernel puts them, as they do in production.
        assert run.edge is not None
        watch = pids(envoy=run.edge_pid) | backend
        return Load(run.edge, CURRENT_USER_METHOD, authorization=bearer, watch=watch)
    if scenario.name in ("get-post", "get-post-envoy", "get-post-bare-envoy"):
        # Every benchmark post in turn, as readers of a feed would ask.
        request, *more = (
            post_service_pb2.GetPostRequest(id=post_id).SerializeToString()
            for post_id in run.post_ids
        )
        if scenario.name == "get-post":
            return Load(
                run.gateway,
                GET_POST_METHOD,
                request,
                tuple(more),
                authorization=bearer,
                watch=backend,
                balance_over="gateway",
            )
        assert run.edge is not None
        watch = pids(envoy=run.edge_pid) | backend
        return Load(
            run.edge, GET_POST_METHOD, request, tuple(more), authorization=bearer, watch=watch
        )
    if scenario.name == "list-posts":
        request = post_service_pb2.ListPostsRequest(page_size=50).SerializeToString()
        return Load(
            run.gateway,
            LIST_POSTS_METHOD,
            request,
            authorization=bearer,
            watch=backend,
            balance_over="gateway",
        )
    if scenario.name == "login":
        request = auth_service_pb2.LoginRequest(email=run.email, password=PASSWORD)
        return Load(
            run.gateway,
            LOGIN_METHOD,
            request.SerializeToString(),
            watch=backend,
            balance_over="gateway",
        )
    raise AssertionError(scenario.name)


def first_call(scenario: Scenario, load: Load, run: Running) -> None:
    """One call before the load, so a broken scenario fails loudly, not as a row of errors."""
    metadata = (("authorization", load.authorization),) if load.authorization else ()
    with grpc.insecure_channel(load.target) as channel:
        try:
            reply = channel.unary_unary(load.method)(load.request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            raise BenchError(
                f"{scenario.label}: the first call failed: {exc.code().name}: {exc.details()}"
            ) from None
    if load.method == CURRENT_USER_METHOD:
        user = user_service_pb2.GetCurrentUserResponse.FromString(reply).user
        if user.email != run.email:
            raise BenchError(f"{scenario.label}: answered for {user.email!r}, not {run.email!r}")
    if load.method == LIST_POSTS_METHOD:
        page = post_service_pb2.ListPostsResponse.FromString(reply).posts
        if len(page) != 50:
            raise BenchError(f"{scenario.label}: a page of {len(page)} posts, not 50")


def drive(
    scenario: Scenario,
    load: Load,
    run: Running,
    args: argparse.Namespace,
    work_dir: Path,
    split: CpuSplit | None = None,
) -> dict[str, Any]:
    """Run bench/load.py for this scenario and return its figures; with
    `split`, the gateway on its CPUs and the client and other servers on the rest."""
    concurrency = args.login_concurrency if scenario.argon2_bound else args.concurrency
    out = work_dir / f"{scenario.name}.json"
    argv = [
        sys.executable,
        str(LOAD),
        "--target",
        load.target,
        "--method",
        load.method,
        *(
            argument
            for request in (load.request, *load.more_requests)
            for argument in ("--request-hex", request.hex())
        ),
        "--concurrency",
        str(concurrency),
        "--channels",
        str(args.channels),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--out",
        str(out),
    ]
    env = dict(run.env)
    if load.authorization:
        env[AUTHORIZATION_VARIABLE] = load.authorization
        argv += ["--metadata", f"authorization=${AUTHORIZATION_VARIABLE}"]
    for name, pid in load.watch.items():
        argv += ["--watch", f"{name}={pid}"]
    if load.balance_over and args.balance:
        argv += ["--balance-over", load.balance_over]
    if split is not None:
        argv += ["--cpus", ",".join(map(str, sorted(split.others)))]

    with pinned_servers(load.watch, split):
        child = run.stack.spawn(f"load-{scenario.name}", argv, env, 5)
        deadline = time.monotonic() + args.warmup + args.duration + 60
        while (code := child.process.poll()) is None:
            if time.monotonic() > deadline:
                raise BenchError(f"the load driver for {scenario.label} did not finish in time")
            time.sleep(0.1)
    if code != 0:
        raise child.died(code)
    run.stack.children.remove(child)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    # The server's CPU for one call (ms): steadier than RPS on a shared machine.
    server = "echo" if "echo" in result["cpu_percent"] else "gateway"
    per_call = 10 * result["cpu_percent"][server] / result["rps"] if result["rps"] else math.nan
    return {"label": scenario.label, "server_cpu_ms_per_call": per_call} | result


@dataclass(frozen=True)
class CpuSplit:
    """Where the processes of a pinned run go: the gateway's CPUs and everyone else's."""

    gateway: frozenset[int]
    others: frozenset[int]


def split_cpus() -> CpuSplit | None:
    """The lower half of this process's CPUs for the gateway, the rest for the
    others; None on a machine with one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return CpuSplit(frozenset(cpus[:half]), frozenset(cpus[half:]))


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of a process and of its descendants onto `cpus`:
    sched_setaffinity places one thread, and only threads made later inherit it."""
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            for thread in process.threads():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(thread.id, cpus)


@contextmanager
def pinned_servers(watch: Mapping[str, int], split: CpuSplit | None) -> Iterator[None]:
    """The watched servers on their side of `split` for the block, then back on every CPU."""
    if split is None:
        yield
        return
    everywhere = frozenset(os.sched_getaffinity(0))
    try:
        for name, pid in watch.items():
            pin(pid, split.gateway if name == "gateway" else split.others)
        yield
    finally:
        for pid in watch.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                pin(pid, everywhere)


# --- the mix through the edge (bench/mix.py) -------------------------------------


def edge_auth_limit() -> dict[str, str]:
    return {name: os.environ.get(name) or value for name, value in EDGE_AUTH_LIMIT.items()}


def check_mix(run: Running) -> None:
    """Each RPC of the mix once through the edge, so a broken one fails loudly."""
    assert run.edge is not None
    assert run.email is not None
    metadata = (("authorization", f"Bearer {run.access_token}"),)
    with grpc.insecure_channel(run.edge) as channel:
        checks: list[tuple[str, bytes, tuple[tuple[str, str], ...]]] = [
            (
                LOGIN_METHOD,
                auth_service_pb2.LoginRequest(
                    email=run.email, password=PASSWORD
                ).SerializeToString(),
                (),
            ),
            (
                LIST_POSTS_METHOD,
                post_service_pb2.ListPostsRequest(page_size=20).SerializeToString(),
                metadata,
            ),
            (
                GET_POST_METHOD,
                post_service_pb2.GetPostRequest(id=run.post_id).SerializeToString(),
                metadata,
            ),
            (
                "/nuell.compute.v1.ComputeService/Analyze",
                compute_service_pb2.AnalyzeRequest(text="A first check.").SerializeToString(),
                metadata,
            ),
        ]
        for method, request, extra in checks:
            try:
                channel.unary_unary(method)(request, metadata=extra, timeout=30)
            except grpc.RpcError as exc:
                raise BenchError(
                    f"mix via Envoy: {method} failed: {exc.code().name}: {exc.details()}"
                ) from None


def drive_mix(
    name: str,
    extra: list[str],
    run: Running,
    args: argparse.Namespace,
    work_dir: Path,
    *,
    expected_s: float,
    sample_after: float | None = None,
    direct: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run bench/mix.py through the edge (or straight at the gateway, if
    `direct`); with `sample_after`, sample the stack's memory and connections
    every SOAK_SAMPLE_S seconds from that many seconds after the start.
    Returns its result and the samples."""
    target = run.gateway if direct else run.edge
    assert target is not None
    assert run.email is not None
    out = work_dir / f"{name}.json"
    ids = work_dir / "post-ids.txt"
    ids.write_text("\n".join(run.post_ids) + "\n", encoding="utf-8")
    watch = mix_components(run)
    if direct:
        watch.pop("envoy", None)
    argv = [
        sys.executable,
        str(MIX),
        "--target",
        target,
        "--post-ids",
        str(ids),
        "--login-email",
        run.email,
        "--seed",
        str(args.seed),
        "--channels",
        str(args.channels),
        "--out",
        str(out),
        *extra,
    ]
    for component, pid in watch.items():
        argv += ["--watch", f"{component}={pid}"]
    env = run.env | {
        AUTHORIZATION_VARIABLE: f"Bearer {run.access_token}",
        PASSWORD_VARIABLE: PASSWORD,
    }
    child = run.stack.spawn(name, argv, env, 5)
    begin = time.monotonic()
    deadline = begin + expected_s + 60
    samples: list[dict[str, Any]] = []
    next_sample = sample_after
    while (code := child.process.poll()) is None:
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"the mix driver ({name}) did not finish in time")
        if next_sample is not None and now - begin >= next_sample:
            samples.append({"t_s": now - begin - (sample_after or 0)} | mix_report.sample(watch))
            next_sample += SOAK_SAMPLE_S
        time.sleep(0.1)
    if code != 0:
        raise child.died(code)
    run.stack.children.remove(child)
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result, samples


def mix_components(run: Running) -> dict[str, int]:
    return pids(
        envoy=run.edge_pid,
        gateway=run.gateway_pid,
        rust_compute=run.compute_pid,
        postgres=run.postgres_pid,
    )


def run_mix_family(
    names: list[str], run: Running, args: argparse.Namespace, work_dir: Path, started: datetime
) -> dict[str, Any]:
    """The mix through a fresh Envoy: closed loop, the offered-load sweep, the
    soak, as asked. Prints their tables, saves the charts, returns the figures."""
    limit = edge_auth_limit()
    say(
        "\nedge for the mix: Login/Register rate limit raised to "
        f"{limit['NUELL_EDGE_AUTH_RATE_PER_MINUTE']}/min per client, burst "
        f"{limit['NUELL_EDGE_AUTH_BURST']} (NUELL_EDGE_AUTH_RATE_PER_MINUTE, "
        "NUELL_EDGE_AUTH_BURST); the default would refuse the mix's logins"
    )
    edge = start_edge(run, work_dir, limit)
    check_mix(run)
    weights = ",".join(f"{k}={v}" for k, v in args.mix_weights.items())
    common = ["--weights", weights, "--timeout", str(args.mix_timeout)]
    stamp = f"{started:%Y%m%dT%H%M%SZ}"
    out: dict[str, Any] = {"edge_auth_limit": limit, "mix_weights": args.mix_weights}
    charts_saved: dict[str, str] = {}

    if "mix-envoy" in names:
        say(
            f"\nmix via Envoy, closed loop: {args.mix_concurrency} calls in flight on "
            f"{args.channels} channels, {args.mix_duration:g} s after {args.warmup:g} s of "
            f"warm-up, seed {args.seed}; load average {os.getloadavg()[0]:.2f}\n"
        )
        extra = ["--mode", "closed", "--concurrency", str(args.mix_concurrency)]
        extra += ["--duration", str(args.mix_duration), "--warmup", str(args.warmup)]
        result, _ = drive_mix(
            "mix-envoy", common + extra, run, args, work_dir, expected_s=args.mix_duration
        )
        for line in mix_report.mix_table(result["steps"][0], args.mix_weights):
            say(line)
        out["mix"] = result

    if "sweep-envoy" in names:
        rates = ",".join(f"{rate:g}" for rate in args.rates)
        say(
            f"\nmix via Envoy, open loop (constant arrival rate): {rates} calls/s, "
            f"{args.step_duration:g} s each, every call waited for (deadline "
            f"{args.mix_timeout:g} s); latency from each call's scheduled send; "
            f"load average {os.getloadavg()[0]:.2f}\n"
        )
        extra = ["--mode", "open", "--rates", rates, "--duration", str(args.step_duration)]
        extra += ["--warmup", str(args.warmup)]
        expected = len(args.rates) * (args.step_duration + args.mix_timeout + 1)
        result, _ = drive_mix(
            "sweep-envoy", common + extra, run, args, work_dir, expected_s=expected
        )
        steps = result["steps"]
        for line in mix_report.sweep_table(steps):
            say(line)
        best = mix_report.largest_holding(steps)
        say(
            "\nlargest offered load with p99 < 100 ms (and < 1% errors): "
            + (f"{best:g} calls/s" if best is not None else f"none of {rates} calls/s")
        )
        result["largest_offered_rps_p99_under_100ms"] = best
        png = charts.latency_chart(
            mix_report_finite(steps),
            f"Mix via Envoy, {args.workers} gateway workers, {os.cpu_count()} cores: "
            f"latency against offered load ({stamp})",
            RESULTS / f"{stamp}-latency.png",
        )
        charts_saved["latency"] = str(png.relative_to(REPO))
        say(f"chart: {charts_saved['latency']}")
        out["sweep"] = result

    if args.soak:
        warmup = min(5.0, args.soak / 4)
        say(
            f"\nsoak: the mix via Envoy at {args.soak_rate:g} calls/s for {args.soak:g} s "
            f"(after {warmup:g} s unmeasured), sampling memory and TCP connections every "
            f"{SOAK_SAMPLE_S:g} s; load average {os.getloadavg()[0]:.2f}\n"
        )
        extra = ["--mode", "open", "--rates", f"{args.soak_rate:g}", "--duration", str(args.soak)]
        extra += ["--warmup", str(warmup), "--pause", "0", "--bucket", str(SOAK_SAMPLE_S)]
        result, samples = drive_mix(
            "soak-envoy",
            common + extra,
            run,
            args,
            work_dir,
            expected_s=args.soak + warmup + args.mix_timeout,
            sample_after=warmup + 0.5,
        )
        samples = [s for s in samples if s["t_s"] <= args.soak + 0.5]
        step = result["steps"][0]
        for line in mix_report.soak_table(samples, step["buckets"]):
            say(line)
        say("")
        for line in mix_report.mix_table(step, args.mix_weights):
            say(line)
        found = mix_report.verdicts(samples)
        say("\nfirst third to last third:")
        for measure, verdict in found.items():
            change = verdict["growth_percent"]
            text = "n/a" if change is None else f"{change:+.1f}%"
            say(
                f"  {measure:<26} {verdict['first']:>8.1f} -> {verdict['last']:>8.1f}  "
                f"{text:>8}  {'flat' if verdict['flat'] else 'GROWS'}"
            )
        overall = mix_report.overall(found)
        say(f"soak verdict: {overall}")
        png = charts.soak_chart(
            samples,
            mix_report_finite(step["buckets"]),
            f"Soak: mix via Envoy at {args.soak_rate:g} calls/s for {args.soak:g} s ({stamp})",
            RESULTS / f"{stamp}-soak.png",
        )
        charts_saved["soak"] = str(png.relative_to(REPO))
        say(f"chart: {charts_saved['soak']}")
        out["soak"] = result | {"samples": samples, "verdicts": found, "verdict": overall}

    edge.stop()
    run.stack.children.remove(edge)
    out["charts"] = charts_saved
    return out


def compare_paced(run: Running, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """GetPost at --paced-rate calls/s, open loop, straight at the gateway and
    then through a fresh edge: what Envoy adds to latency and CPU per call at
    equal load (the closed-loop rows measure it at saturation, where its CPU
    comes out of the gateway's). Prints the table; returns the figures."""
    rate = args.paced_rate
    say(
        f"\nGetPost at {rate:g} calls/s, open loop, {args.duration:g} s after "
        f"{args.warmup:g} s of warm-up; latency from each call's scheduled send; "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    say(PACED_COLUMNS)
    extra = ["--weights", "GetPost=1", "--mode", "open", "--rates", f"{rate:g}"]
    extra += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    extra += ["--timeout", str(args.mix_timeout)]
    expected = args.warmup + args.duration + args.mix_timeout
    steps: dict[str, dict[str, Any]] = {}
    result, _ = drive_mix(
        "get-post-paced-direct", extra, run, args, work_dir, expected_s=expected, direct=True
    )
    steps["direct"] = result["steps"][0]
    say(paced_row("direct", steps["direct"]))
    edge = start_edge(run, work_dir)
    try:
        result, _ = drive_mix(
            "get-post-paced-envoy", extra, run, args, work_dir, expected_s=expected
        )
    finally:
        edge.stop()
        run.stack.children.remove(edge)
    steps["envoy"] = result["steps"][0]
    say(paced_row("via Envoy", steps["envoy"]))
    found = paced_ratios(steps["direct"], steps["envoy"])
    print_ratios(found)
    return {"rate": rate, "steps": steps, "ratios": found}


def compare_edge(run: Running, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """GetPost closed loop, straight at the gateway and through the edge in
    turn: --edge-rounds rounds of --edge-duration seconds per path, in ABBA
    order so that a machine whose speed drifts weighs on both paths alike.
    Once with every process free to run on every CPU, once with the gateway
    pinned to half of them and the client, Envoy and an embedded PostgreSQL
    to the other half. Prints medians and ranges; returns every leg."""
    legs = argparse.Namespace(
        **vars(args) | {"duration": args.edge_duration, "warmup": args.edge_warmup}
    )
    direct, via_edge = BY_NAME["get-post"], BY_NAME["get-post-envoy"]
    layouts: dict[str, CpuSplit | None] = {"shared": None}
    if (split := split_cpus()) is not None:
        layouts["pinned"] = split
    say(
        f"\nWhat the edge costs GetPost: {args.concurrency} calls in flight, "
        f"{args.edge_rounds} rounds of {args.edge_duration:g} s per path after "
        f"{args.edge_warmup:g} s of warm-up, direct and via Envoy in turn; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if split is not None:
        gateway, others = (",".join(map(str, sorted(cpus))) for cpus in astuple(split))
        placed = f"pinned: the gateway on CPU {gateway}; the client, Envoy"
        if run.postgres_pid:
            say(f"{placed} and PostgreSQL on CPU {others}")
        else:  # a server of the machine's own is not ours to move
            say(f"{placed} on CPU {others}; PostgreSQL (not embedded) where the kernel puts it")
    else:
        say("pinned: skipped, this machine has one CPU")
    figures: dict[str, Any] = {}
    edge = start_edge(run, work_dir)
    try:
        first_call(via_edge, load_for(via_edge, run), run)
        say("")
        say(EDGE_COLUMNS)
        for layout, placement in layouts.items():
            rounds = []
            for number in range(args.edge_rounds):
                order = (direct, via_edge) if number % 4 in (0, 3) else (via_edge, direct)
                leg = {
                    scenario.name: drive(
                        scenario, load_for(scenario, run), run, legs, work_dir, placement
                    )
                    for scenario in order
                }
                for scenario in order:
                    if not leg[scenario.name]["rps"]:
                        codes = leg[scenario.name]["error_codes"]
                        raise BenchError(f"edge-cost: {scenario.label} served no call: {codes}")
                rounds.append({"direct": leg[direct.name], "envoy": leg[via_edge.name]})
            summary = summarize_edge(rounds)
            for path in ("direct", "envoy"):
                say(edge_row(layout, path, summary[path]))
            figures[layout] = {"rounds": rounds, "summary": summary}
    finally:
        edge.stop()
        run.stack.children.remove(edge)
    say("")
    for layout, found in figures.items():
        change = found["summary"]["rps_change_percent"]
        say(
            f"  edge-cost {layout:<7} rps % change from direct, median of rounds "
            f"{change['median']:+7.2f} %  (rounds {change['min']:+.1f} to {change['max']:+.1f})"
        )
    return {
        "rounds": args.edge_rounds,
        "duration_s": args.edge_duration,
        "warmup_s": args.edge_warmup,
        "layouts": figures,
    }


def summarize_edge(rounds: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Medians and ranges over the rounds, per path, and the per-round change."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    def envoy_ms_per_call(leg: Mapping[str, Any]) -> float:  # compare_edge: every leg served
        return 10 * float(leg["cpu_percent"].get("envoy", 0.0)) / float(leg["rps"])

    summary: dict[str, Any] = {}
    for path in ("direct", "envoy"):
        legs = [one[path] for one in rounds]
        summary[path] = {
            "rps": spread([leg["rps"] for leg in legs]),
            "p50_ms": statistics.median(leg["p50_ms"] for leg in legs),
            "p99_ms": statistics.median(leg["p99_ms"] for leg in legs),
            "gateway_ms_per_call": statistics.median(leg["server_cpu_ms_per_call"] for leg in legs),
            "envoy_ms_per_call": statistics.median(envoy_ms_per_call(leg) for leg in legs),
            "errors": sum(leg["errors"] for leg in legs),
        }
    summary["rps_change_percent"] = spread(
        [100 * (one["envoy"]["rps"] / one["direct"]["rps"] - 1) for one in rounds]
    )
    return summary


def edge_row(layout: str, path: str, figures: Mapping[str, Any]) -> str:
    rps = figures["rps"]
    envoy = f"{figures['envoy_ms_per_call']:.2f}" if path == "envoy" else "-"
    return (
        f"{layout:<7} {'direct' if path == 'direct' else 'via Envoy':<10} "
        f"{rps['median']:>7.0f} {rps['min']:>7.0f}-{rps['max']:<7.0f} "
        f"{figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f} "
        f"{figures['gateway_ms_per_call']:>10.2f} {envoy:>8} {figures['errors']:>6}"
    )


def cpu_ms_per_call(step: Mapping[str, Any]) -> dict[str, float]:
    """Each watched component's CPU per served call, ms."""
    served = step["achieved_rps"]
    if not served:
        return {}
    return {name: 10 * percent / served for name, percent in step["cpu"].items()}


def paced_row(label: str, step: Mapping[str, Any]) -> str:
    cpu = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms_per_call(step).items())
    return (
        f"{label:<12} {step['offered_rps']:>8.0f} {step['achieved_rps']:>7.0f} "
        f"{step['p50_ms']:>7.2f} {step['p90_ms']:>7.2f} {step['p99_ms']:>7.2f} "
        f"{step['errors']:>6}  {cpu}"
    )


def paced_ratios(direct: Mapping[str, Any], edge: Mapping[str, Any]) -> dict[str, float]:
    """What the edge adds at equal load: latency, and the servers' CPU per call
    (everything watched but the client)."""
    if not (direct["ok"] and edge["ok"]):
        return {}

    def servers_ms(step: Mapping[str, Any]) -> float:
        return sum(ms for name, ms in cpu_ms_per_call(step).items() if name != "client")

    return {
        "get-post-paced p50 ms over direct": edge["p50_ms"] - direct["p50_ms"],
        "get-post-paced p50 % over direct": 100 * (edge["p50_ms"] / direct["p50_ms"] - 1),
        "get-post-paced p99 % over direct": 100 * (edge["p99_ms"] / direct["p99_ms"] - 1),
        "get-post-paced servers' cpu % over direct": 100
        * (servers_ms(edge) / servers_ms(direct) - 1),
    }


def mix_report_finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a chart: NaN (no samples) as None."""
    return [finite(row) for row in rows]


# --- output ---------------------------------------------------------------------

SPLIT_CPU = frozenset({"echo", "gateway"})

PACED_COLUMNS = (
    f"{'path':<12} {'offered':>8} {'served':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
    f"{'errors':>6}  cpu ms per call"
)

EDGE_COLUMNS = (
    f"{'layout':<7} {'path':<10} {'rps':>7} {'range':^15} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'gateway ms':>10} {'envoy ms':>8} {'errors':>6}  (medians of the rounds; CPU ms per call)"
)

COLUMNS = (
    f"{'scenario':<26} {'conc':>4} {'rps':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
    f"{'errors':>6} {'srv ms':>6}  cpu % of one core"
)


def cpu_cell(result: Mapping[str, Any]) -> str:
    """`gateway 150 (98+52; conns 5+3), postgres 20, client 60`: for a server with
    several worker processes, each worker's CPU and the connections the kernel
    gave it (SO_REUSEPORT places connections, not calls)."""
    parts = []
    for name, total in result["cpu_percent"].items():
        part = f"{name} {total:.0f}"
        workers = [p for p in result["processes"][name] if p["listens"]]
        if name in SPLIT_CPU and len(workers) > 1:
            cpu = "+".join(f"{p['cpu_percent']:.0f}" for p in workers)
            conns = "+".join(str(p["connections"]) for p in workers)
            part += f" ({cpu}; conns {conns})"
        parts.append(part)
    return ", ".join(parts)


def row(result: Mapping[str, Any]) -> str:
    cpu = cpu_cell(result)
    return (
        f"{result['label']:<26} {result['concurrency']:>4} {result['rps']:>7.0f} "
        f"{result['p50_ms']:>7.2f} {result['p90_ms']:>7.2f} {result['p99_ms']:>7.2f} "
        f"{result['errors']:>6} {result['server_cpu_ms_per_call']:>6.2f}  {cpu}"
    )


def ratios(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The comparisons the targets are stated in (bench/README.md)."""
    out: dict[str, float] = {}
    for name in ("get-post", "list-posts", "user", "health"):
        for ceiling in ("echo-1", "echo"):
            if name in results and ceiling in results and results[ceiling]["rps"]:
                out[f"{name} rps % of {ceiling}"] = (
                    100 * results[name]["rps"] / results[ceiling]["rps"]
                )
    for direct_name, edge_name in (
        ("get-post", "get-post-envoy"),
        ("get-post", "get-post-bare-envoy"),
        ("user", "user-envoy"),
    ):
        if direct_name not in results or edge_name not in results:
            continue
        direct, edge = results[direct_name], results[edge_name]
        if not (direct["rps"] and edge["rps"]):  # every call failed: no ratio to speak of
            continue
        out[f"{edge_name} p50 ms over direct"] = edge["p50_ms"] - direct["p50_ms"]
        out[f"{edge_name} p50 % over direct"] = 100 * (edge["p50_ms"] / direct["p50_ms"] - 1)
        out[f"{edge_name} rps % change from direct"] = 100 * (edge["rps"] / direct["rps"] - 1)
    return out


def print_ratios(found: Mapping[str, float]) -> None:
    if not found:
        return
    say("")
    for name, value in found.items():
        unit = "ms" if name.endswith(" ms over direct") else "%"
        say(
            f"  {name:<44} {value:+8.2f} {unit}"
            if "over" in name or "change" in name
            else f"  {name:<44} {value:8.0f} {unit}"
        )


def tuning_variables() -> dict[str, str]:
    """NUELL_* variables that reached the gateway (secrets left out), for the record."""
    secret = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL")
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith("NUELL_") and not secret.search(name)
    }


def save(report: Mapping[str, Any], stamp: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def finite(value: Any) -> Any:
    """JSON has no NaN: a figure with no samples becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


# --- the run ----------------------------------------------------------------------


def bench(args: argparse.Namespace, run: Running, cleanup: ExitStack, work_dir: Path) -> Path:
    started = datetime.now(UTC)
    load_average = os.getloadavg()
    if args.only:
        chosen = [BY_NAME[name] for name in args.only]
    else:  # a soak alone unless other scenarios are named
        chosen = [] if args.soak else list(SCENARIOS)
    mixes = [scenario.name for scenario in chosen if scenario.mix]
    paced = any(scenario.paced for scenario in chosen)
    edge_cost = any(scenario.edge_cost for scenario in chosen)
    # The rest are rows of the main table.
    chosen = [s for s in chosen if not (s.mix or s.paced or s.edge_cost)]
    needs = frozenset[str]().union(*(scenario.needs for scenario in chosen))
    if paced:
        needs |= BY_NAME["get-post-paced"].needs
    if edge_cost:
        needs |= BY_NAME["edge-cost"].needs
    if mixes or args.soak:
        needs |= {"gateway", "user", "posts"}
    if load_average[0] > 0.5:
        say(
            f"note: load average {load_average[0]:.2f} before starting; "
            "other work on this machine skews the figures"
        )

    if "echo" in needs:
        run.echo, run.echo_pid = start_echo(run, args.workers)
    if "echo-1" in needs:
        run.echo_1, run.echo_1_pid = start_echo(run, 1)
    if "gateway" in needs:
        start_gateway(run, cleanup, args.workers)
    if "user" in needs:
        create_user(run)
    if "posts" in needs:
        create_posts(run)
    # Envoy runs only for its own scenario, so the direct ones see no idle
    # edge and no connections of its in the gateway.
    direct = [scenario for scenario in chosen if not scenario.needs & EDGES]
    for scenario in direct:  # fail before measuring anything
        first_call(scenario, load_for(scenario, run), run)

    if chosen:
        say(
            f"\n{args.duration:g} s per scenario after {args.warmup:g} s of warm-up, "
            f"{args.workers} worker process(es) per Python server (NUELL_WORKERS), "
            f"one client process with {args.channels} channels\n"
        )
        say(COLUMNS)
    results: dict[str, dict[str, Any]] = {}
    for scenario in chosen:
        edge = None
        if "edge" in scenario.needs:
            edge = start_edge(run, work_dir)
        elif "bare-edge" in scenario.needs:
            edge = start_bare_edge(run, work_dir)
        load = load_for(scenario, run)
        if edge is not None:
            first_call(scenario, load, run)
        results[scenario.name] = drive(scenario, load, run, args, work_dir)
        if edge is not None:
            edge.stop()
            run.stack.children.remove(edge)
        say(row(results[scenario.name]))
        if codes := results[scenario.name]["error_codes"]:
            say("    errors: " + ", ".join(f"{code} {count}" for code, count in codes.items()))
    found = ratios(results)
    print_ratios(found)
    edge_figures = compare_edge(run, args, work_dir) if edge_cost else {}
    paced_figures = compare_paced(run, args, work_dir) if paced else {}
    mix = run_mix_family(mixes, run, args, work_dir, started) if mixes or args.soak else {}

    report = (
        {
            "timestamp": started.isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "grpcio": grpc.__version__,
                "load_average_at_start": list(load_average),
            },
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "login_concurrency": args.login_concurrency,
                "channels": args.channels,
                "workers": args.workers,
                "balanced": args.balance,
            },
            "database": run.database,
            "tuning": tuning_variables(),
            "scenarios": finite(results),
            "ratios": found,
        }
        | finite({"edge_cost": edge_figures} if edge_figures else {})
        | finite({"paced": paced_figures} if paced_figures else {})
        | finite(mix)
    )
    return save(report, started)


DEFAULT_MIX_WEIGHTS = "Login=5,ListPosts=60,GetPost=20,CreatePost=10,Analyze=5"
DEFAULT_RATES = "100,200,300,400,500,600,800"


def mix_weights(text: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in ("Login", "ListPosts", "GetPost", "CreatePost", "Analyze"):
            raise argparse.ArgumentTypeError(f"{name!r}: not an RPC of the mix")
        weights[name.strip()] = int(value)
    if any(w < 0 for w in weights.values()) or not sum(weights.values()):
        raise argparse.ArgumentTypeError("weights are whole numbers >= 0, not all 0")
    return {name: w for name, w in weights.items() if w}


def rates(text: str) -> list[float]:
    found = [float(item) for item in text.split(",")]
    if any(rate <= 0 for rate in found):
        raise argparse.ArgumentTypeError("offered loads are calls/s, > 0")
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="End-to-end load runs against the real stack (see bench/README.md).",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds per scenario (5)"
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="calls in flight, all but Login (32)"
    )
    parser.add_argument(
        "--login-concurrency", type=int, default=8, help="calls in flight for Login (8)"
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=8,
        help="connections the client spreads its calls over (8)",
    )
    parser.add_argument(
        "--no-balance",
        dest="balance",
        action="store_false",
        help="leave the client's connections where the kernel puts them, instead of giving "
        "each server worker the same number (direct scenarios)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("NUELL_WORKERS") or os.cpu_count() or 1),
        help="processes of py_gateway (NUELL_WORKERS) and of the echo server alike; "
        "NUELL_WORKERS if set, else one per core, the gateway's own default",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BY_NAME),
        metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(BY_NAME)}",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=1000.0,
        help="GetPost calls/s of get-post-paced, direct and via Envoy (1000)",
    )
    edge = parser.add_argument_group("edge-cost: GetPost direct and via Envoy in turn")
    edge.add_argument(
        "--edge-rounds",
        type=int,
        default=6,
        help="rounds, each one leg per path; an even number keeps the ABBA order balanced (6)",
    )
    edge.add_argument(
        "--edge-duration", type=float, default=3.0, help="measured seconds per leg (3)"
    )
    edge.add_argument(
        "--edge-warmup", type=float, default=1.0, help="unmeasured seconds per leg first (1)"
    )
    mix = parser.add_argument_group(
        "the mix through Envoy (mix-envoy, sweep-envoy, --soak; see bench/mix.py)"
    )
    mix.add_argument(
        "--mix-weights",
        type=mix_weights,
        default=mix_weights(DEFAULT_MIX_WEIGHTS),
        help=f"RPC weights ({DEFAULT_MIX_WEIGHTS})",
    )
    mix.add_argument("--seed", type=int, default=1, help="the mix's RNG seed (1)")
    mix.add_argument(
        "--mix-duration", type=float, default=10.0, help="measured seconds, closed loop (10)"
    )
    mix.add_argument(
        "--mix-concurrency", type=int, default=32, help="calls in flight, closed loop (32)"
    )
    mix.add_argument(
        "--rates",
        type=rates,
        default=rates(DEFAULT_RATES),
        help=f"offered loads of the sweep, calls/s ({DEFAULT_RATES})",
    )
    mix.add_argument(
        "--step-duration", type=float, default=5.0, help="seconds per offered load (5)"
    )
    mix.add_argument(
        "--mix-timeout", type=float, default=5.0, help="deadline of each mix call, seconds (5)"
    )
    mix.add_argument(
        "--soak",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="run the mix at --soak-rate for this long, sampling memory and connections "
        "(default off); alone unless --only names other scenarios",
    )
    mix.add_argument("--soak-rate", type=float, default=100.0, help="calls/s during the soak (100)")
    args = parser.parse_args(argv)
    if args.soak < 0 or args.soak_rate <= 0 or args.mix_duration <= 0 or args.step_duration <= 0:
        parser.error("--soak >= 0; soak rate and mix durations > 0")
    if min(args.concurrency, args.login_concurrency, args.channels, args.workers) < 1:
        parser.error("concurrency, channels and workers must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.paced_rate <= 0:
        parser.error("duration and --paced-rate must be positive, warm-up not negative")
    if args.edge_rounds < 1 or args.edge_duration <= 0 or args.edge_warmup < 0:
        parser.error("--edge-rounds >= 1, --edge-duration > 0, --edge-warmup >= 0")
    if args.only:
        args.only = list(dict.fromkeys(args.only))  # keep the order given, once each
    return args


def main() -> int:
    args = parse_args()
    # Explicitly, SIGINT too: a shell starting us in the background ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    work_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-"))
    failed = False

    def remove_logs() -> None:
        logs = work_dir / "logs"
        if failed and logs.is_dir() and any(logs.iterdir()):
            print(f"bench: logs kept in {logs}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    with ExitStack() as cleanup:
        # Registered first, so it runs last: the logs go once everything has stopped.
        cleanup.callback(remove_logs)
        env = run_stack.base_env()
        for variable in ("DATABASE_URL", "TEST_DATABASE_URL"):
            env.pop(variable, None)
        stack = run_stack.Stack(StackSettings(), work_dir, STARTUP_TIMEOUT)
        run = Running(stack=stack, env=env)
        cleanup.callback(stop_children, run)
        try:
            path = bench(args, run, cleanup, work_dir)
        except KeyboardInterrupt:
            say("\ninterrupted; stopping everything")
            return 130
        except (BenchError, run_stack.StackError, SettingsError) as exc:
            failed = True
            print(f"bench: {exc}", file=sys.stderr, flush=True)
            return 1
        except BaseException:
            failed = True
            raise
    say(f"\nsaved {path.relative_to(REPO)}")
    return 0


def stop_children(run: Running) -> None:
    """Newest first; Ctrl-C and SIGTERM no longer interrupt once stopping starts."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for child in reversed(run.stack.children):
        child.stop()


if __name__ == "__main__":
    sys.exit(main())
