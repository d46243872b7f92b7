"""What the scenarios dial, all started by deploy/launcher.py: deploy/stack.py's
services and the benchmark's own. An edge runs only during the scenarios that
dial it, so the direct ones see no idle edge.

    echo, echo-1    bench/echo_server.py with the gateway's workers, and with one
    gateway         a throwaway database, migrate, rust_compute, py_gateway, MailDev
    edge, edge-mix  deploy's Envoy (edge-mix: Login's rate limit raised for the mix)
    bare-edge       Envoy with bench/bare_envoy.yaml: a router and nothing else
"""

import atexit
import contextlib
import dataclasses
import os
import secrets
import shutil
import string
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc  # type: ignore[import-untyped]
import psycopg
from nuell.auth.v1.auth_service_pb2 import LoginRequest, RegisterRequest  # type: ignore[import-untyped]
from nuell.auth.v1.auth_service_pb2_grpc import AuthServiceStub  # type: ignore[import-untyped]
from nuell.posts.v1.post_service_pb2 import CreatePostRequest  # type: ignore[import-untyped]
from nuell.posts.v1.post_service_pb2_grpc import PostServiceStub  # type: ignore[import-untyped]
from psycopg import sql

from bench.scenarios import BENCH_POSTS, PASSWORD, Fixture
from deploy import stack
from deploy.dev_tls import ensure_dev_certificate
from deploy.launcher import Launcher, LaunchError, Service, free_port
from deploy.settings import REPO, Address, SettingsError, StackSettings

STARTUP_TIMEOUT = 90.0  # two cores, and the embedded server's initdb on first use
# The edge's per-client Login limit would refuse the mix's logins, all from one address.
EDGE_AUTH_LIMIT = {"NUELL_EDGE_AUTH_RATE_PER_MINUTE": "1200", "NUELL_EDGE_AUTH_BURST": "10000"}
EDGES = ("edge", "edge-mix", "bare-edge")
POST = "Benchmark post {}: a sentence or two of text, long enough to look like a real post."


class BenchError(Exception):
    """The run cannot go on; the message says why."""


# What stops a run with a message rather than a traceback.
StackFailure = (BenchError, LaunchError, SettingsError, psycopg.Error)


class Stack:
    def __init__(self, workers: int, work_dir: Path) -> None:
        self.workers, self.work_dir = workers, work_dir
        # NUELL_* tuning reaches the gateway; its database and signing key are the run's own.
        unset = ("DATABASE_URL", "TEST_DATABASE_URL")
        self.env = {k: v for k, v in os.environ.items() if k not in unset} | {
            "NUELL_JWT_KEYS": f"bench:{secrets.token_urlsafe(36)}",
            "NUELL_WORKERS": str(workers),
        }
        self.launcher = Launcher(work_dir / "logs", STARTUP_TIMEOUT)
        self.edge_auth_limit = {k: os.environ.get(k) or v for k, v in EDGE_AUTH_LIMIT.items()}
        self.addresses: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.fixture = Fixture()
        self.database, self.database_url = "none", ""
        self.cleanup = contextlib.ExitStack()

    def watch(self, name: str) -> dict[str, int]:
        """The processes a call to `name` passes through, by name."""
        if name.startswith("echo"):
            return {"echo": self.pids[name]}
        path = {"envoy": self.pids[name]} if name in EDGES else {}
        parts = ("gateway", "rust_compute", "postgres")  # postgres: when embedded, ours
        return path | {part: self.pids[part] for part in parts if part in self.pids}

    def balance_over(self, name: str) -> int | None:  # a server with workers sharing its port
        return self.pids[name] if name in ("gateway", "echo") else None

    def prepare(self, names: Sequence[str]) -> None:
        """What `names` need for the whole run, up front (the edges need the gateway)."""
        needed = {"gateway" if name in EDGES else name for name in names} - self.addresses.keys()
        for name in sorted(needed):
            if name == "gateway":
                self.start_gateway()
            else:
                self.serve(self.launcher, *self.echo(name))

    @contextlib.contextmanager
    def serving(self, names: Sequence[str]) -> Iterator[None]:
        """The edges among `names` up for the block, then stopped."""
        self.prepare(names)
        with Launcher(self.work_dir / "logs", STARTUP_TIMEOUT) as edges:
            try:
                for name in names:
                    if name in EDGES:
                        self.serve(edges, *self.edge(name))
                yield
            finally:
                for name in EDGES:
                    self.addresses.pop(name, None)

    def close(self) -> None:
        self.launcher.stop()
        self.cleanup.close()  # the database, once nothing is connected

    def serve(self, launcher: Launcher, service: Service, address: str) -> None:
        self.pids[service.name] = launcher.start(service)[0].pid
        self.addresses[service.name] = address

    def echo(self, name: str) -> tuple[Service, str]:
        workers = self.workers if name == "echo" else 1
        address = f"127.0.0.1:{free_port()}"
        return Service(
            name,
            (sys.executable, "-m", "bench.echo_server", address, str(workers)),
            self.env,
            lambda running: "listening on" in running.output(),
            announce=f"starting echo_server ({workers} process(es))",
        ), address

    def start_gateway(self) -> None:
        loopback = {f"NUELL_{part}_ADDR": "127.0.0.1:0" for part in ("GATEWAY", "COMPUTE")}
        metrics = {f"NUELL_{part}METRICS_ADDR": "127.0.0.1:0" for part in ("", "COMPUTE_")}
        mail = {f"NUELL_MAIL_{part}_PORT": str(free_port()) for part in ("SMTP", "WEB")}
        mail |= {"NUELL_DATA_DIR": str(self.work_dir / "data")}  # MailDev keeps mails there
        settings = stack.with_fixed_ports(StackSettings.from_env(loopback | metrics | mail))
        only = ("migrate", "rust_compute", "py_gateway", "maildev")
        url, self.database, postgres = fresh_database(self.cleanup, self.work_dir / "logs")
        self.database_url = url
        self.pids |= {"postgres": postgres} if postgres else {}
        self.launcher.start(*stack.services(settings, env=self.env, database_url=url, only=only))
        self.pids["gateway"] = self.launcher["py_gateway"].pid
        self.pids["rust_compute"] = self.launcher["rust_compute"].pid
        self.addresses["gateway"] = settings.gateway.connect_target
        self.addresses["compute"] = settings.compute.connect_target  # near-duplicates dials it
        self.fixture = make_fixture(self.addresses["gateway"], url)

    def edge(self, name: str) -> tuple[Service, str]:
        """Envoy in front of the gateway, on free loopback ports."""
        gateway = self.addresses["gateway"]
        ports = ("HTTP", "HTTPS", "ADMIN")
        settings = StackSettings.from_env(
            os.environ
            | {f"NUELL_EDGE_{port}_PORT": str(free_port()) for port in ports}
            | (self.edge_auth_limit if name == "edge-mix" else {})
            # The TLS listener's development certificate: this run's own.
            | {"NUELL_GATEWAY_ADDR": gateway, "NUELL_DATA_DIR": str(self.work_dir / "edge")}
        )
        loopback = Address("127.0.0.1", settings.edge_http.port)  # not every interface
        settings = dataclasses.replace(settings, edge_http=loopback)
        address = settings.edge_http.connect_target
        config = self.work_dir / f"{name}.yaml"
        envoy = stack.envoy_service(settings, self.env, name=name, config=config)
        if name != "bare-edge":
            ensure_dev_certificate(settings.edge_tls_cert.parent)
            return envoy, address
        host, _, port = gateway.rpartition(":")
        bound = {"listen_port": settings.edge_http.port, "admin_port": settings.edge_admin.port}
        template = string.Template((REPO / "bench" / "bare_envoy.yaml").read_text())
        text = template.substitute(bound, gateway_host=host, gateway_port=port)
        # The same process and readiness as the edge; only its config differs.
        return dataclasses.replace(envoy, prepare=lambda: config.write_text(text)), address


def fresh_database(cleanup: contextlib.ExitStack, log_dir: Path) -> tuple[str, str, int | None]:
    """A new database on the server at TEST_DATABASE_URL (else DATABASE_URL, else
    an embedded one in a temporary folder), dropped by `cleanup`. Returns its
    libpq URL, where it is, and the embedded server's pid."""
    server, pid = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL"), None
    if server:
        at = urlsplit(server)
        where = f"the server at {at.hostname}:{at.port or 5432}"
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="nuell-bench-pg-"))
        # atexit runs last-in first-out: after pgserver has stopped the server.
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        print("starting embedded PostgreSQL in a temporary folder", flush=True)
        server, where = stack.embedded_database(data_dir, log_dir / "postgres.log"), "embedded"
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    print(f"database: a fresh one on {where}", flush=True)
    name = f"nuell_bench_{uuid.uuid4().hex[:12]}"
    scheme, sep, rest = server.partition("://")
    server = f"{scheme.split('+')[0]}{sep}{rest}"  # libpq's, not SQLAlchemy's

    def execute(statement: str) -> None:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL(statement).format(sql.Identifier(name)))

    execute("CREATE DATABASE {}")
    cleanup.callback(execute, "DROP DATABASE IF EXISTS {} WITH (FORCE)")
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}")), where, pid


def sign_up(gateway: str, database_url: str) -> tuple[str, str, str]:
    """A new account, registered, verified and logged in: its id, email and access token."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    account = {"email": email, "password": PASSWORD}
    with grpc.insecure_channel(gateway) as channel:
        auth = AuthServiceStub(channel)
        try:
            auth.Register(RegisterRequest(**account), timeout=30)
            # Verified as the mailed link would; register-mail measures the mail path.
            with psycopg.connect(database_url) as db:
                row = db.execute(
                    "UPDATE users SET email_verified = true WHERE email = %s RETURNING id::text",
                    (email,),
                ).fetchone()
            token = auth.Login(LoginRequest(**account), timeout=30).access_token
        except grpc.RpcError as exc:
            raise BenchError(f"a benchmark account: {exc.code().name}: {exc.details()}") from None
    return row[0] if row else "", email, token


def make_fixture(gateway: str, database_url: str) -> Fixture:
    """The benchmark account and the posts it wrote."""
    _, email, token = sign_up(gateway, database_url)
    with grpc.insecure_channel(gateway) as channel:
        posts = PostServiceStub(channel)
        try:
            bearer = (("authorization", f"Bearer {token}"),)
            made = [CreatePostRequest(content=POST.format(n)) for n in range(BENCH_POSTS)]
            ids = tuple(
                posts.CreatePost(post, metadata=bearer, timeout=30).post.id for post in made
            )
        except grpc.RpcError as exc:
            raise BenchError(f"the benchmark account: {exc.code().name}: {exc.details()}") from None
    return Fixture(email, token, ids)
