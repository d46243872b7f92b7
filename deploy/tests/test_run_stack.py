"""The local stack runner (`make run`) as a user meets it: started as a
subprocess on free ports, stopped with Ctrl-C, services killed under it and
restarted, and its one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil
import pytest
from nuell.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from nuell.compute.v1 import compute_service_pb2, compute_service_pb2_grpc

from deploy.launcher import Launcher, Running, Service, free_port, port_is_free
from deploy.tests.support import (
    RUNNER,
    base_env,
    envoy_ready,
    grpc_web_call,
    health_status,
    http_request,
    tls_client_context,
    wait_exit,
    wait_for,
    wait_for_link,
    wait_for_output,
)

READY = re.compile(r"^Ready\. Press Ctrl-C to stop\.$", re.MULTILINE)
# Ctrl-C must not wait on a slow drain: envoy, gateway, compute and PostgreSQL.
STOP_TIMEOUT = 15


@pytest.fixture(scope="module")
def data_dir(outside_pytest_tmp: Callable[[str], Path]) -> Path:
    """One data folder for the module, so the embedded database is reused as in `make run`."""
    return outside_pytest_tmp("data")


@pytest.fixture
def ports() -> dict[str, int]:
    names = (
        *("edge", "edge_tls", "admin", "gateway", "compute", "metrics", "compute_metrics"),
        *("web", "mail_smtp", "mail_web"),
    )
    return {name: free_port() for name in names}


def runner_env(data_dir: Path, ports: dict[str, int], **overrides: str) -> dict[str, str]:
    env = base_env(
        **{
            "NUELL_DATA_DIR": str(data_dir),
            "NUELL_EDGE_HTTP_PORT": str(ports["edge"]),
            "NUELL_EDGE_HTTPS_PORT": str(ports["edge_tls"]),
            "NUELL_EDGE_ADMIN_PORT": str(ports["admin"]),
            "NUELL_WEB_PORT": str(ports["web"]),
            "NUELL_GATEWAY_ADDR": f"127.0.0.1:{ports['gateway']}",
            "NUELL_COMPUTE_ADDR": f"127.0.0.1:{ports['compute']}",
            "NUELL_METRICS_ADDR": f"127.0.0.1:{ports['metrics']}",
            "NUELL_COMPUTE_METRICS_ADDR": f"127.0.0.1:{ports['compute_metrics']}",
            "NUELL_MAIL_SMTP_PORT": str(ports["mail_smtp"]),
            "NUELL_MAIL_WEB_PORT": str(ports["mail_web"]),
            # Workers, whatever the core count: a gateway killed outright leaves them behind.
            "NUELL_WORKERS": "2",
            **overrides,
        }
    )
    # The runner brings its own signing key, as `make run` does.
    del env["NUELL_JWT_KEYS"]
    return env


def start_runner(processes: Launcher, env: dict[str, str], *flags: str) -> Running:
    """The runner, waited on until ready."""
    (runner,) = processes.start(Service("run_stack", (*RUNNER, *flags), env, stop_timeout=20))
    wait_for_output(runner, READY, timeout=180)
    return runner


@pytest.fixture
def running_stack(
    compute_bin: Path, data_dir: Path, ports: dict[str, int], processes: Launcher
) -> Running:
    """The runner with its default restart policy and an embedded database, ready."""
    return start_runner(processes, runner_env(data_dir, ports))


def interrupt(proc: Running) -> int:
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
    os.killpg(proc.popen.pid, signal.SIGINT)
    return wait_exit(proc, STOP_TIMEOUT)


def assert_ports_free(ports: dict[str, int]) -> None:
    busy = {name: port for name, port in ports.items() if not port_is_free(port)}
    assert not busy, f"still bound after the runner exited: {busy}"


def test_runner_serves_then_stops_cleanly_on_ctrl_c(
    running_stack: Running, data_dir: Path, ports: dict[str, int]
) -> None:
    edge = f"127.0.0.1:{ports['edge']}"
    assert health_status(edge) == "SERVING"
    assert health_status(f"127.0.0.1:{ports['gateway']}") == "SERVING"
    assert health_status(f"127.0.0.1:{ports['compute']}") == "SERVING"
    assert envoy_ready(ports["admin"])
    table = running_stack.output()
    for port in ports.values():
        assert f":{port}" in table
    assert (data_dir / "run" / "envoy.yaml").is_file()
    # The generated signing key is readable by its owner only.
    assert (data_dir / "secrets" / "jwt_keys").stat().st_mode & 0o077 == 0
    assert http_request(ports["mail_web"], "GET", "/api/email", {}).status == 200
    for name in ("rust_compute", "py_gateway", "envoy", "web", "maildev"):
        assert (data_dir / "logs" / f"{name}.log").is_file()
    # The page, on its own origin, which the edge allows by default.
    page = http_request(ports["web"], "GET", "/", {})
    assert page.status == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert f"http://localhost:{ports['web']}" in table
    allowed = grpc_web_call(
        ports["edge"], "grpc.health.v1.Health/Check", origin=f"http://localhost:{ports['web']}"
    )
    assert allowed.headers["access-control-allow-origin"] == f"http://localhost:{ports['web']}"
    # The development certificate, made on first run, serves the TLS listener.
    tls = data_dir / "tls"
    assert (tls / "edge.key").stat().st_mode & 0o077 == 0
    secure = grpc_web_call(
        ports["edge_tls"],
        "grpc.health.v1.Health/Check",
        tls=tls_client_context(tls / "ca.crt"),
        host="localhost",
    )
    assert secure.grpc_status == 0
    assert "max-age=" in secure.headers["strict-transport-security"]
    assert str(tls / "ca.crt") in table

    code = interrupt(running_stack)

    output = running_stack.output()
    assert code == 0, output
    assert "Traceback" not in output
    stopped = ("web", "envoy", "py_gateway", "rust_compute")
    order = [output.index(f"stopping {name}") for name in stopped]
    assert order == sorted(order), output
    assert_nothing_left(ports)
    # The embedded server stopped with the runner, and its data stayed.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert (data_dir / "postgres" / "PG_VERSION").exists()


# --- services dying under the runner -----------------------------------------------

PASSWORD = "Restart-check-7!x"
# Restarts and their health checks on two busy cores: generous, and polled.
RESTART_TIMEOUT = 90
SERVICES = {
    "rust_compute": lambda p: p.name() == "rust_compute",
    "py_gateway": lambda p: "nuell_gateway" in p.cmdline() and "serve" in p.cmdline(),
    "envoy": lambda p: p.name() == "envoy",
    "web": lambda p: "deploy.serve_web" in p.cmdline(),
}


def service(runner: Running, name: str, *, not_pid: int | None = None) -> psutil.Process:
    """The runner's child running `name` (other than `not_pid`), once there is one."""

    def found() -> psutil.Process | None:
        for child in psutil.Process(runner.popen.pid).children():
            try:
                if child.pid != not_pid and SERVICES[name](child):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_for(found, timeout=RESTART_TIMEOUT, what=f"the runner's {name}")


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def strays(ports: dict[str, int]) -> list[str]:
    """Live processes started for this runner (its environment names this test's ports)."""
    marker = str(ports["admin"])
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.environ().get("NUELL_EDGE_ADMIN_PORT") == marker and alive(process):
                found.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])}")
        except psutil.Error:
            continue
    return found


def assert_nothing_left(ports: dict[str, int]) -> None:
    """Every port free and no process of this runner alive, its grandchildren included."""
    assert_ports_free(ports)
    try:
        wait_for(lambda: not strays(ports), timeout=15, what="the runner's processes to go")
    except AssertionError:
        raise AssertionError(f"left running: {strays(ports)}") from None


def lines(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


def death_line(name: str, how: str, restart: int, delay: str) -> re.Pattern[str]:
    """The one line the runner prints when `name` dies, naming its log."""
    return lines(
        rf"^{name} {how}; restarting it in {delay} s \(restart {restart} of at most \d+ "
        rf"within \d+ s\); last lines of \S*logs/{name}\.log:$"
    )


def back_line(name: str, where: str) -> re.Pattern[str]:
    return lines(rf"^{name} is back, healthy at {re.escape(where)}$")


def sign_in(gateway: str, ports: dict[str, int]) -> str:
    """An access token for a fresh account, registered straight at the gateway and
    verified by the link in the mail the runner's MailDev received."""
    email = f"restart-{uuid.uuid4().hex[:12]}@example.com"
    with grpc.insecure_channel(gateway) as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        auth.Register(auth_service_pb2.RegisterRequest(email=email, password=PASSWORD), timeout=30)
        mailbox = f"http://127.0.0.1:{ports['mail_web']}"
        _, page, token = wait_for_link(mailbox, email, "verify_email")
        assert page == f"http://localhost:{ports['web']}"
        auth.VerifyEmail(auth_service_pb2.VerifyEmailRequest(token=token), timeout=30)
        login = auth.Login(
            auth_service_pb2.LoginRequest(email=email, password=PASSWORD), timeout=30
        )
    return login.access_token


def word_count(target: str, token: str) -> int | None:
    """ComputeService/Analyze at `target` (the gateway or the edge), or None if it fails."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = compute_service_pb2_grpc.ComputeServiceStub(channel).Analyze(
                compute_service_pb2.AnalyzeRequest(text="one two three four five"),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
        except grpc.RpcError:
            return None
    return int(reply.analysis.word_count)


def analyzes(target: str, token: str) -> bool:
    """Analyze at `target` answers, soon: clients reconnect to a restarted peer with backoff."""
    words = wait_for(lambda: word_count(target, token), timeout=30, what=f"Analyze at {target}")
    return words == 5


def test_killed_compute_comes_back_and_the_running_gateway_uses_it(
    running_stack: Running, ports: dict[str, int]
) -> None:
    gateway_at, compute_at = (f"127.0.0.1:{ports[name]}" for name in ("gateway", "compute"))
    token = sign_in(gateway_at, ports)
    assert analyzes(gateway_at, token)
    gateway = service(running_stack, "py_gateway")
    compute = service(running_stack, "rust_compute")

    compute.kill()

    wait_for_output(
        running_stack, death_line("rust_compute", r"was killed by signal 9 \(SIGKILL\)", 1, "0.5")
    )
    wait_for_output(running_stack, back_line("rust_compute", compute_at), timeout=RESTART_TIMEOUT)
    assert service(running_stack, "rust_compute").pid != compute.pid
    assert health_status(compute_at) == "SERVING"
    # The same gateway reconnects to the new compute by itself.
    assert analyzes(gateway_at, token)
    assert service(running_stack, "py_gateway").pid == gateway.pid
    assert not re.search(r"^py_gateway (was|exited|did)", running_stack.output(), re.MULTILINE)


def test_killed_edge_and_page_server_that_exits_unasked_come_back(
    running_stack: Running, ports: dict[str, int]
) -> None:
    edge_at = f"127.0.0.1:{ports['edge']}"
    gateway = service(running_stack, "py_gateway")

    service(running_stack, "envoy").kill()
    service(running_stack, "web").terminate()  # serve_web.py exits 0: still not asked to

    wait_for_output(
        running_stack, death_line("envoy", r"was killed by signal 9 \(SIGKILL\)", 1, "0.5")
    )
    wait_for_output(
        running_stack, death_line("web", "exited with code 0 without being asked to", 1, "0.5")
    )
    wait_for_output(running_stack, back_line("envoy", f"0.0.0.0:{ports['edge']}"))
    wait_for_output(running_stack, back_line("web", f"http://localhost:{ports['web']}"))
    assert health_status(edge_at) == "SERVING"
    assert envoy_ready(ports["admin"])
    assert http_request(ports["web"], "GET", "/", {}).status == 200
    assert service(running_stack, "py_gateway").pid == gateway.pid


def test_killed_gateway_comes_back_behind_the_same_edge(
    running_stack: Running, ports: dict[str, int]
) -> None:
    gateway_at, edge_at = (f"127.0.0.1:{ports[name]}" for name in ("gateway", "edge"))
    token = sign_in(gateway_at, ports)
    edge = service(running_stack, "envoy")
    gateway = service(running_stack, "py_gateway")
    workers = gateway.children()
    assert len(workers) >= 2, workers

    gateway.kill()  # its workers live on, serving the port, until the runner stops them

    wait_for_output(
        running_stack, death_line("py_gateway", r"was killed by signal 9 \(SIGKILL\)", 1, "0.5")
    )
    wait_for_output(running_stack, back_line("py_gateway", gateway_at), timeout=RESTART_TIMEOUT)
    assert not [worker for worker in workers if alive(worker)]
    assert health_status(gateway_at) == "SERVING"
    # Envoy kept running and reaches the new gateway; the token outlived the restart.
    assert analyzes(edge_at, token)
    assert service(running_stack, "envoy").pid == edge.pid

    # A worker dying takes the whole gateway down (exit 1): restarted as a unit.
    restarted = service(running_stack, "py_gateway", not_pid=gateway.pid)
    worker = next(c for c in restarted.children() if "multiprocessing.spawn" in str(c.cmdline()))
    worker.kill()

    wait_for_output(running_stack, death_line("py_gateway", "exited with code 1", 2, "1"))
    wait_for_output(
        running_stack,
        lines(rf"(?s)restart 2 of.*^py_gateway is back, healthy at {re.escape(gateway_at)}$"),
        timeout=RESTART_TIMEOUT,
    )
    assert analyzes(edge_at, token)
    assert service(running_stack, "envoy").pid == edge.pid


def test_service_that_keeps_dying_stops_the_stack(
    compute_bin: Path, data_dir: Path, ports: dict[str, int], processes: Launcher
) -> None:
    env = runner_env(data_dir, ports, NUELL_MAX_RESTARTS="2", NUELL_RESTART_BACKOFF_SECONDS="0.2")
    runner = start_runner(processes, env)
    back = back_line("rust_compute", f"127.0.0.1:{ports['compute']}")

    killed = None
    for crash, delay in ((1, "0.2"), (2, "0.4")):  # the backoff doubles
        killed = service(runner, "rust_compute", not_pid=killed and killed.pid)
        killed.kill()
        wait_for_output(
            runner, death_line("rust_compute", r"was killed by signal 9 \(SIGKILL\)", crash, delay)
        )
        wait_for(
            lambda n=crash: len(back.findall(runner.output())) == n,
            timeout=RESTART_TIMEOUT,
            what=f"rust_compute back after crash {crash}",
        )
    service(runner, "rust_compute", not_pid=killed and killed.pid).kill()

    code = wait_exit(runner, STOP_TIMEOUT + 10)

    output = runner.output()
    assert code == 1, output
    final = output[output.rindex("run_stack: ") :]
    assert final.startswith(
        "run_stack: rust_compute keeps dying: 3 crashes within 60 s, "
        "the last one killed by signal 9 (SIGKILL). Not restarting it again; "
        f"its log is {data_dir}/logs/rust_compute.log"
    ), output
    assert "Traceback" not in output
    assert_nothing_left(ports)


def test_ctrl_c_during_a_restart_leaves_nothing_behind(
    running_stack: Running, ports: dict[str, int]
) -> None:
    gateway = service(running_stack, "py_gateway")
    gateway.kill()
    wait_for_output(
        running_stack, death_line("py_gateway", r"was killed by signal 9 \(SIGKILL\)", 1, "0.5")
    )
    # A gateway takes seconds to import and start its workers: this is (almost
    # always) mid-restart, and nothing may be left behind either way.
    replacement = service(running_stack, "py_gateway", not_pid=gateway.pid)

    code = interrupt(running_stack)

    output = running_stack.output()
    assert code == 0, output
    assert "stopping py_gateway" in output
    assert not alive(replacement)
    assert_nothing_left(ports)


def test_no_restart_stops_everything_when_a_child_dies(
    compute_bin: Path, data_dir: Path, ports: dict[str, int], processes: Launcher
) -> None:
    runner = start_runner(processes, runner_env(data_dir, ports), "--no-restart")

    service(runner, "rust_compute").kill()
    code = wait_exit(runner, STOP_TIMEOUT)

    output = runner.output()
    assert code == 1, output
    assert "run_stack: rust_compute was killed by signal 9 (SIGKILL); last lines of" in output
    assert "restarting" not in output
    assert "Traceback" not in output
    assert_nothing_left(ports)


def test_embedded_database_dying_stops_the_stack(
    compute_bin: Path,
    outside_pytest_tmp: Callable[[str], Path],
    ports: dict[str, int],
    processes: Launcher,
) -> None:
    data = outside_pytest_tmp("data-database-dies")  # not the module's: this one is killed
    runner = start_runner(processes, runner_env(data, ports))
    pid = int((data / "postgres" / "postmaster.pid").read_text().split()[0])

    psutil.Process(pid).kill()
    code = wait_exit(runner, STOP_TIMEOUT + 10)

    output = runner.output()
    assert code == 1, output
    final = output[output.rindex("run_stack: ") :]
    assert final.startswith(f"run_stack: the embedded PostgreSQL (pid {pid}) died;"), output
    assert f"{data}/postgres/log" in final
    assert "restarting" not in output
    assert "stopping embedded PostgreSQL" not in output
    assert "Traceback" not in output
    assert_nothing_left(ports)


def run_to_failure(env: dict[str, str], processes: Launcher, *flags: str) -> tuple[int, str]:
    (runner,) = processes.start(Service("run_stack", (*RUNNER, *flags), env, stop_timeout=20))
    code = wait_exit(runner, 60)
    return code, runner.output()


def assert_one_clear_line(code: int, output: str, *needles: str) -> None:
    assert code == 1, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("run_stack: ")
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output


def test_busy_port_is_one_clear_line_and_starts_nothing(
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: Launcher
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["gateway"]))
        squatter.listen()

        code, output = run_to_failure(runner_env(tmp_path / "data", ports), processes)

    assert_one_clear_line(
        code, output, f"127.0.0.1:{ports['gateway']}", "NUELL_GATEWAY_ADDR", "in use"
    )
    assert not (tmp_path / "data").exists()


def test_unreachable_database_is_one_clear_line(
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: Launcher
) -> None:
    closed_port = free_port()
    nowhere = f"postgresql://nuell:hunter2-secret@127.0.0.1:{closed_port}/nuell"

    code, output = run_to_failure(
        runner_env(tmp_path / "data", ports, DATABASE_URL=nowhere), processes
    )

    assert_one_clear_line(code, output, "DATABASE_URL", f"127.0.0.1:{closed_port}")
    assert "hunter2-secret" not in output
    assert not (tmp_path / "data").exists()


def test_missing_compute_binary_is_one_clear_line(
    tmp_path: Path, ports: dict[str, int], processes: Launcher
) -> None:
    env = runner_env(tmp_path / "data", ports, NUELL_COMPUTE_BIN=str(tmp_path / "rust_compute"))

    code, output = run_to_failure(env, processes)

    assert_one_clear_line(code, output, "rust_compute", "cargo build --release")


def test_bad_setting_is_one_clear_line(
    tmp_path: Path, ports: dict[str, int], processes: Launcher
) -> None:
    env = runner_env(tmp_path / "data", ports, NUELL_EDGE_HTTP_PORT="eighty")

    code, output = run_to_failure(env, processes)

    assert_one_clear_line(code, output, "NUELL_EDGE_HTTP_PORT")


@pytest.mark.parametrize(
    ("flags", "variables", "needle"),
    [
        ((), {"NUELL_MAX_RESTARTS": "many"}, "NUELL_MAX_RESTARTS='many' is not a whole number"),
        (("--restart-window", "0"), {}, "--restart-window"),
        ((), {"NUELL_RESTART_BACKOFF_SECONDS": "30"}, "NUELL_RESTART_BACKOFF_SECONDS"),
    ],
)
def test_bad_restart_policy_is_one_clear_line(
    tmp_path: Path,
    ports: dict[str, int],
    processes: Launcher,
    flags: tuple[str, ...],
    variables: dict[str, str],
    needle: str,
) -> None:
    env = runner_env(tmp_path / "data", ports, **variables)

    code, output = run_to_failure(env, processes, *flags)

    assert_one_clear_line(code, output, needle)
    assert not (tmp_path / "data").exists()


def test_missing_tls_certificate_of_your_own_is_one_clear_line(
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: Launcher
) -> None:
    env = runner_env(
        tmp_path / "data",
        ports,
        NUELL_EDGE_TLS_CERT=str(tmp_path / "site.pem"),
        NUELL_EDGE_TLS_KEY=str(tmp_path / "site.key"),
    )

    code, output = run_to_failure(env, processes)

    assert_one_clear_line(code, output, "NUELL_EDGE_TLS_CERT", "site.pem")
    assert not (tmp_path / "data").exists()
