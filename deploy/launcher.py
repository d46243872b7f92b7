"""Start declared services in dependency order, wait until each is ready, keep
them up, stop them in reverse: the one place that starts a process group.

A `Service` is data: name, command, environment, readiness probe, the names
it starts after, its log file. deploy/stack.py declares the Nuell stack;
callers add their own and start any subset (deploy/README.md shows how).
`start` returns once every service is ready (a one-shot one, migrations, once
it exited 0). Leaving the `with` block stops them newest first: SIGTERM to the
process group, SIGKILL after `stop_timeout`, then whatever the group left
behind. `watch(policy)` restarts services that die (`make run`).
"""

from __future__ import annotations

import contextlib
import ctypes
import graphlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc  # type: ignore[import-untyped, unused-ignore]
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped, unused-ignore]

from deploy.settings import REPO, Address

# What rust_compute, the gateway and the page server print once bound (port 0 resolved).
LISTENING = re.compile(r"^[\w.-]+ listening on (\S+)\s*$", re.M)
Probe = Callable[["Running"], object]


class LaunchError(Exception):
    """A service could not be started or kept up; the message is all a user needs."""


@dataclass(frozen=True)
class Service:
    """One process of a stack, declared as data."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # the whole environment; None: this process's
    ready: Probe | None = None  # polled until truthy; None: started is ready
    after: tuple[str, ...] = ()  # names that must be ready first
    log: str = ""  # file name in the launcher's log folder; default `<name>.log`
    where: str = ""  # where it serves, as shown to a person
    oneshot: bool = False  # runs to completion (migrations), ready on exit 0
    stop_timeout: float = 10.0  # SIGTERM to SIGKILL
    prepare: Callable[[], object] | None = None  # before every start (a config to render)
    announce: str = ""  # printed as it starts; default `starting <name>`
    # What it binds, (label, variable, address), for a check that they are free
    # before anything starts; and what `make run` shows of it, (label, where).
    binds: tuple[tuple[str, str, Address], ...] = ()
    shows: tuple[tuple[str, str], ...] = ()


def grpc_serving(target: str) -> bool:
    """One grpc.health.v1 check (service "") on a fresh channel."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - our own http:// URLs
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def grpc_health(target: str) -> Probe:
    return lambda _running: grpc_serving(target)


def http_get(url: str) -> Probe:
    return lambda _running: http_ok(url)


def all_of(*probes: Probe) -> Probe:
    return lambda running: all(probe(running) for probe in probes)


def listening(running: Running) -> Address | None:
    """Ready once the service printed its `... listening on ADDR` line."""
    return running.address


# Below Linux's ephemeral range (32768-60999): a port the kernel may pick for
# bind(0) can become the local port of an outgoing connection before a service binds it.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def bind_error(host: str, port: int) -> OSError | None:
    """Why `host:port` cannot be bound now, or None. With SO_REUSEADDR, as the
    servers bind, so a port in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    return bind_error(host, port) is None


def free_port() -> int:
    """A port nothing uses now, outside the ephemeral range, not handed out before."""
    while True:
        port = _PORTS[secrets.randbelow(len(_PORTS))]
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port


def shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it: shorter to read."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def ending(code: int) -> str:
    """How a process ended, from its Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with code {code}" + (" without being asked to" if code == 0 else "")


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
# Run by the child before it becomes the service, so the kernel SIGTERMs it if
# the launcher is killed outright (children lead their own process groups, so
# Ctrl-C reaches only the launcher). Not a preexec_fn: that forces a plain
# fork(), whose gRPC fork handlers can deadlock a launcher using gRPC probes.
_DIE_WITH_LAUNCHER = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as exc:
    print(f"launcher: cannot run {sys.argv[2]}: {exc.strerror}", file=sys.stderr)
    os._exit(127)
"""


def adopt_orphans() -> None:
    """Become the reaper of orphaned descendants (Linux): a gateway killed outright
    leaves its workers on its port, and only their reaper sees them go."""
    if _libc is not None:
        _libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a member that is not a zombie; reaps ours."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


@dataclass
class Running:
    """A started service: its process, log and (once printed) address."""

    service: Service
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0  # where this run's output starts: a restart appends to the log

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode("utf-8", errors="replace")
        return ""

    def log_tail(self, lines: int = 15) -> str:
        tail = self.output().rstrip().splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"

    @property
    def address(self) -> Address | None:
        """From this run's `... listening on ADDR` line, once printed."""
        if match := LISTENING.search(self.output()):
            return Address.parse(match.group(1), variable=self.name, allow_port_zero=False)
        return None

    def failure(self, how: str) -> LaunchError:
        log = shown(self.log_path)
        return LaunchError(f"{self.name} {how}; last lines of {log}:\n{self.log_tail()}")

    def stop(self, say: Callable[[str], None] = print) -> None:
        """SIGTERM its process group, SIGKILL after `stop_timeout`; done once no
        member is left (a killed gateway's workers hold its port), so a
        replacement can bind it. Also what a process that exited left behind."""
        for sig, patience in ((signal.SIGTERM, self.service.stop_timeout), (signal.SIGKILL, 5.0)):
            leader = self.popen.poll() is None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + patience
            while (
                self.popen.poll() is None or _group_alive(self.pid)
            ) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.popen.poll() is not None and not _group_alive(self.pid):
                return
            if sig == signal.SIGTERM and leader and self.popen.poll() is None:
                say(f"  {self.name} did not stop within {patience:g} s; killing it")
            else:
                more = "; killing them" if sig == signal.SIGTERM else " that do not go away"
                say(f"  {self.name} left processes behind (process group {self.pid}){more}")


def in_dependency_order(services: Iterable[Service]) -> list[Service]:
    """Each service after those it names in `after` (when they are in the set)."""
    by_name = {service.name: service for service in services}
    graph = {s.name: [name for name in s.after if name in by_name] for s in by_name.values()}
    try:
        return [by_name[name] for name in graphlib.TopologicalSorter(graph).static_order()]
    except graphlib.CycleError as exc:
        raise LaunchError(f"services depend on each other in a circle: {exc.args[1]}") from None


@dataclass(frozen=True)
class RestartPolicy:
    """When a service that died is started again, and when the launcher gives up."""

    max_restarts: int = 5  # per service within `window`; 0: never restart
    window: float = 60.0
    backoff: float = 0.5  # before the first restart; doubled for each crash in the window
    backoff_max: float = 8.0

    def delay(self, crashes: int) -> float:
        return float(min(self.backoff * 2 ** (crashes - 1), self.backoff_max))


@dataclass
class _Tended:
    """A supervised service between crashes."""

    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None  # waiting out the backoff
    healthy_by: float | None = None  # restarted, not yet healthy


@dataclass
class Launcher:
    """Starts services, keeps them by name, stops them newest first."""

    log_dir: Path
    startup_timeout: float = 60.0
    # Set (from a signal handler) to abandon a start (LaunchError) or end `watch`.
    stop_event: threading.Event = field(default_factory=threading.Event)
    say: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    running: dict[str, Running] = field(default_factory=dict)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __getitem__(self, name: str) -> Running:
        return self.running[name]

    def start(self, *services: Service) -> list[Running]:
        """Start `services` in dependency order, each waited on until ready."""
        return [self._start_one(service) for service in in_dependency_order(services)]

    def spawn(self, service: Service, *, restart: bool = False) -> Running:
        """Start the process only; a restart appends to its log."""
        if service.prepare is not None:
            service.prepare()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / (service.log or f"{service.name}.log")
        argv = [str(arg) for arg in service.argv]
        if _libc is not None:
            argv = [sys.executable, "-I", "-S", "-c", _DIE_WITH_LAUNCHER, str(os.getpid()), *argv]
        with log_path.open("ab" if restart else "wb") as log:  # the child keeps its own copy
            if restart:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                log.write(f"--- {service.name} restarted at {stamp} ---\n".encode())
                log.flush()
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if service.env is None else service.env),
                cwd=REPO,
                process_group=0,
            )
            self.running[service.name] = running = Running(service, popen, log_path, log.tell())
        return running

    def _start_one(self, service: Service) -> Running:
        self.say(service.announce or f"starting {service.name}")
        running = self.spawn(service)
        deadline = time.monotonic() + self.startup_timeout
        while not self.stop_event.wait(0.1):
            code = running.popen.poll()
            if service.oneshot and code == 0:
                return self.running.pop(service.name)
            if code is not None:
                raise running.failure(ending(code))
            if not service.oneshot and (service.ready is None or service.ready(running)):
                return running
            if time.monotonic() > deadline:
                what = "finish" if service.oneshot else "become ready"
                raise running.failure(
                    f"did not {what} within {self.startup_timeout:.0f} s "
                    "(NUELL_STARTUP_TIMEOUT_SECONDS)"
                )
        raise LaunchError(f"stopped while {service.name} was starting")

    def stop(self) -> None:
        for running in reversed(list(self.running.values())):
            if running.popen.poll() is None:
                self.say(f"stopping {running.name}")
            running.stop(self.say)  # also what a dead one left behind
        self.running.clear()

    def watch(self, policy: RestartPolicy, check: Callable[[], None] = lambda: None) -> None:
        """Until `stop_event`: restart services that die, by `policy`; `check`
        may raise LaunchError (a database that is not ours to restart)."""
        tended = {name: _Tended() for name in self.running}
        while not self.stop_event.wait(0.2):
            check()
            for name, state in tended.items():
                if not self.stop_event.is_set():
                    self._tend(self.running[name], state, policy)

    def _tend(self, running: Running, state: _Tended, policy: RestartPolicy) -> None:
        now, service = time.monotonic(), running.service
        if state.restart_at is not None and now >= state.restart_at:
            state.restart_at = None
            try:
                self.spawn(service, restart=True)
            except OSError as exc:  # e.g. a binary being rebuilt right now
                self._crashed(running, state, policy, f"could not be started again ({exc})")
            state.healthy_by = now + self.startup_timeout
        elif state.restart_at is not None:
            return
        elif (code := running.popen.poll()) is not None:
            self._crashed(running, state, policy, ending(code))
            running.stop(self.say)  # its group too, before the replacement binds the same port
        elif state.healthy_by is not None and (service.ready is None or service.ready(running)):
            state.healthy_by = None
            self.say(f"{service.name} is back, healthy at {service.where}")
        elif state.healthy_by is not None and now > state.healthy_by:
            running.stop(self.say)
            how = f"did not become healthy within {self.startup_timeout:.0f} s of its restart"
            self._crashed(running, state, policy, f"{how} (NUELL_STARTUP_TIMEOUT_SECONDS)")

    def _crashed(self, running: Running, state: _Tended, policy: RestartPolicy, how: str) -> None:
        if policy.max_restarts <= 0:
            raise running.failure(how)
        now = time.monotonic()
        state.crashes.append(now)
        while state.crashes[0] < now - policy.window:
            state.crashes.popleft()
        count, log = len(state.crashes), shown(running.log_path)
        if count > policy.max_restarts:
            raise LaunchError(
                f"{running.name} keeps dying: {count} crashes within {policy.window:g} s, "
                f"the last one {how.removeprefix('was ')}. Not restarting it again; "
                f"its log is {log}, last lines:\n{running.log_tail()}"
            )
        delay = policy.delay(count)
        print(
            f"{running.name} {how}; restarting it in {delay:g} s (restart {count} of at most "
            f"{policy.max_restarts} within {policy.window:g} s); "
            f"last lines of {log}:\n{running.log_tail(5)}",
            file=sys.stderr,
            flush=True,
        )
        state.restart_at = now + delay
