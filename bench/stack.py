"""The processes the scenarios dial, started as they are first needed and
stopped at the end; the edges only for the scenario that dials them.

    echo, echo-1      bench/echo_server.py with the gateway's workers, and with one
    gateway           a throwaway database, rust_compute and py_gateway
    edge, edge-mix    Envoy as deploy/render.py writes it (edge-mix: the Login
                      rate limit raised, every call comes from one address)
    bare-edge         bench/bare_envoy.yaml: a router and nothing else
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import socket
import string
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc  # type: ignore[import-untyped]
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc  # type: ignore[import-untyped]
from nuell.posts.v1 import post_service_pb2, post_service_pb2_grpc  # type: ignore[import-untyped]

from bench.scenarios import BENCH_POSTS, PASSWORD, Fixture

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "deploy" / "local"), str(REPO / "deploy")]

import run_stack  # type: ignore[import-not-found]  # noqa: E402
from render import write_envoy  # type: ignore[import-not-found]  # noqa: E402
from settings import Address, SettingsError, StackSettings  # type: ignore[import-not-found]  # noqa: E402

STARTUP_TIMEOUT = 90.0  # two cores, and the embedded server's initdb on first use
ECHO_LISTENING = re.compile(r"^echo_server listening on (\S+)\s*$", re.MULTILINE)
# The edge's per-client limit on Login and Register would refuse the mix's
# logins, all from one address: raised for its Envoy unless set already.
EDGE_AUTH_LIMIT = {"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "1200", "NUELL_EDGE_AUTH_BURST": "10000"}
EDGES = ("edge", "edge-mix", "bare-edge")


class BenchError(Exception):
    """The run cannot go on; the message says why."""


# What stops a run with a message rather than a traceback.
StackFailure = (BenchError, run_stack.StackError, SettingsError)


@dataclass
class Service:
    address: str
    pid: int
    child: Any = None  # run_stack's Child


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Stack:
    def __init__(self, workers: int, work_dir: Path) -> None:
        self.workers = workers
        self.work_dir = work_dir
        self.env = run_stack.base_env()
        for variable in ("DATABASE_URL", "TEST_DATABASE_URL"):
            self.env.pop(variable, None)
        self.processes = run_stack.Stack(StackSettings(), work_dir, STARTUP_TIMEOUT)
        self.up: dict[str, Service] = {}
        self.fixture = Fixture()
        self.database = "none"
        self.edge_auth_limit = {k: os.environ.get(k) or v for k, v in EDGE_AUTH_LIMIT.items()}
        # A key for this run only: nothing outside it can mint a token the gateway accepts.
        self.jwt_keys = f"bench:{secrets.token_urlsafe(36)}"
        self.cleanup = contextlib.ExitStack()

    def address(self, name: str) -> str:
        return self.up[name].address

    def watch(self, name: str) -> dict[str, int]:
        """The processes a call to `name` passes through, by name."""
        if name.startswith("echo"):
            return {"echo": self.up[name].pid}
        path = {"envoy": self.up[name].pid} if name in EDGES else {}
        path |= {
            part: self.up[part].pid
            for part in ("gateway", "rust_compute", "postgres")
            if part in self.up
        }
        return path

    def balance_over(self, name: str) -> int | None:
        """The pid whose workers share `name`'s port, for a server with workers."""
        return self.up[name].pid if name in ("gateway", "echo") else None

    def prepare(self, names: Sequence[str]) -> None:
        """Up front, what `names` need that lives for the whole run: a table's
        rows then follow one another without start-up lines between them."""
        for name in names:
            self.start("gateway" if name in EDGES else name)

    @contextlib.contextmanager
    def serving(self, names: Sequence[str]) -> Iterator[None]:
        """`names` up for the block; the edges among them stopped after it."""
        for name in names:
            self.start(name)
        try:
            yield
        finally:
            for name in names:
                if name in EDGES and (service := self.up.pop(name, None)):
                    service.child.stop()
                    self.processes.children.remove(service.child)

    def start(self, name: str) -> None:
        if name in self.up:
            return
        if name.startswith("echo"):
            self.up[name] = self.start_echo(self.workers if name == "echo" else 1)
        elif name == "gateway":
            self.start_gateway()
        else:
            self.start("gateway")
            self.up[name] = self.start_edge(name)

    def close(self) -> None:
        """Newest first; then the database."""
        for child in reversed(self.processes.children):
            child.stop()
        self.cleanup.close()

    # --- the processes --------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str], ready: Any = None) -> Any:
        child = self.processes.spawn(name, argv, env, 15)
        if ready is not None:
            self.processes.wait_until(child, "ready", ready)
        return child

    def start_echo(self, workers: int) -> Service:
        print(f"starting echo_server ({workers} process(es))", flush=True)
        argv = [sys.executable, "-m", "bench.echo_server", "--workers", str(workers)]
        child = self.spawn(f"echo_server_{workers}", argv, self.env)

        def bound() -> str | None:
            found = ECHO_LISTENING.search(child.log_path.read_text(errors="replace"))
            return found.group(1) if found else None

        return Service(str(self.processes.wait_until(child, "listening", bound)), child.process.pid)

    def start_gateway(self) -> None:
        compute_bin = run_stack.find_compute_binary()
        database_url = self.start_database()
        print("starting rust_compute", flush=True)
        env = self.env | {"NUELL_COMPUTE_METRICS_ADDR": "127.0.0.1:0"}
        compute = self.spawn("rust_compute", [str(compute_bin), "--addr", "127.0.0.1:0"], env)
        compute_at = self.processes.listening_address(compute).connect_target
        self.processes.wait_healthy(compute, compute_at)
        self.up["rust_compute"] = Service(compute_at, compute.process.pid)
        print("starting py_gateway", flush=True)
        env = self.env | {
            "DATABASE_URL": database_url,
            "NUELL_GATEWAY_ADDR": "127.0.0.1:0",
            "NUELL_METRICS_ADDR": "127.0.0.1:0",
            "NUELL_COMPUTE_TARGET": compute_at,
            "NUELL_JWT_KEYS": self.jwt_keys,
            "NUELL_WORKERS": str(self.workers),
        }
        argv = [sys.executable, "-m", "nuell_gateway", "serve"]
        gateway = self.spawn("py_gateway", argv, env)
        gateway_at = self.processes.listening_address(gateway).connect_target
        self.processes.wait_healthy(gateway, gateway_at)
        self.up["gateway"] = Service(gateway_at, gateway.process.pid)
        self.fixture = make_fixture(gateway_at)

    def start_database(self) -> str:
        """A fresh, migrated database, dropped (or deleted with its server) at the end."""
        import psycopg
        from psycopg import sql

        server_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
        if server_url:
            self.database = f"server at {run_stack.redact(server_url)}"
        else:
            from nuell_gateway.db.embedded import start_embedded_postgres

            data_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-pg-"))
            # atexit runs last-in first-out: after pgserver has stopped the server.
            atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
            server_url = str(start_embedded_postgres(data_dir, delete_on_exit=True))
            self.database = "embedded"
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            self.up["postgres"] = Service("", pid)
        print(f"database: a fresh one on the {self.database}", flush=True)
        name = f"nuell_bench_{uuid.uuid4().hex[:12]}"
        scheme, sep, rest = server_url.partition("://")
        admin_url = f"{scheme.split('+')[0]}{sep}{rest}"  # libpq's, not SQLAlchemy's
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

        def drop() -> None:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                admin.execute(drop.format(sql.Identifier(name)))

        self.cleanup.callback(drop)
        database_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        print("applying migrations", flush=True)
        env = self.env | {"DATABASE_URL": database_url, "NUELL_JWT_KEYS": self.jwt_keys}
        migrate = self.spawn("migrate", [sys.executable, "-m", "nuell_gateway", "migrate"], env)
        if (code := self.processes.wait_exit(migrate)) != 0:
            raise migrate.died(code)
        self.processes.children.remove(migrate)
        return database_url

    def start_edge(self, name: str) -> Service:
        """Envoy in front of the gateway, on free loopback ports."""
        gateway = self.up["gateway"].address
        ports = {
            "NUELL_EDGE_HTTP_PORT": str(free_port()),
            "NUELL_EDGE_ADMIN_PORT": str(free_port()),
        }
        extra = self.edge_auth_limit if name == "edge-mix" else {}
        settings = StackSettings.from_env(
            ports
            | extra
            | {
                "NUELL_EDGE_HTTPS_PORT": str(free_port()),
                "NUELL_GATEWAY_ADDR": gateway,
                # The TLS listener's development certificate: this run's own.
                "NUELL_DATA_DIR": str(self.work_dir / "edge-data"),
            }
        )
        settings = dataclasses.replace(
            settings, edge_http=Address("127.0.0.1", settings.edge_http.port)
        )
        config = self.work_dir / f"{name}.yaml"
        if name == "bare-edge":
            host, _, port = gateway.rpartition(":")
            template = string.Template((REPO / "bench" / "bare_envoy.yaml").read_text())
            config.write_text(
                template.substitute(
                    admin_port=settings.edge_admin.port,
                    listen_port=settings.edge_http.port,
                    gateway_host=host,
                    gateway_port=port,
                )
            )
        else:
            run_stack.make_dev_certificate(settings)
            write_envoy(settings, config)
        print(f"starting {name}", flush=True)
        argv = run_stack.envoy_argv(run_stack.find_envoy(), config, settings)
        child = self.spawn(name, argv, self.env, lambda: run_stack.admin_ready(settings.edge_admin))
        address = settings.edge_http.connect_target
        self.processes.wait_healthy(child, address)
        return Service(address, child.process.pid, child)


def make_fixture(gateway: str) -> Fixture:
    """The benchmark account, registered and logged in, and its posts."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    with grpc.insecure_channel(gateway) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        posts = post_service_pb2_grpc.PostServiceStub(channel)
        try:
            auth.Register(
                auth_service_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30
            )
            login = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
            token = auth.Login(login, timeout=30).access_token
            metadata = (("authorization", f"Bearer {token}"),)
            post_ids = tuple(
                posts.CreatePost(
                    post_service_pb2.CreatePostRequest(
                        content=f"Benchmark post {n}: an ordinary sentence or two of text, "
                        "long enough to look like a real post in a feed."
                    ),
                    metadata=metadata,
                    timeout=30,
                ).post.id
                for n in range(BENCH_POSTS)
            )
        except grpc.RpcError as exc:
            raise BenchError(
                f"preparing the benchmark account: {exc.code().name}: {exc.details()}"
            ) from None
    return Fixture(email, token, post_ids)
