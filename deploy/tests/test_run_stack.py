"""The local stack runner (`make run`) as a user meets it: started as a
subprocess on free ports, stopped with Ctrl-C, and its one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from support import (
    RUNNER,
    Proc,
    ProcessGroup,
    base_env,
    envoy_ready,
    free_port,
    grpc_web_call,
    health_status,
    http_request,
    port_is_free,
    tls_client_context,
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
    names = ("edge", "edge_tls", "admin", "gateway", "compute", "metrics", "compute_metrics", "web")
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
            **overrides,
        }
    )
    # The runner brings its own signing key, as `make run` does.
    del env["NUELL_JWT_KEYS"]
    return env


@pytest.fixture
def running_stack(
    compute_bin: Path, data_dir: Path, ports: dict[str, int], processes: ProcessGroup
) -> Proc:
    """The runner, started with an embedded database and waited on until ready."""
    runner = processes.start("run_stack", [sys.executable, RUNNER], runner_env(data_dir, ports))
    runner.wait_for_output(READY, timeout=180)
    return runner


def interrupt(proc: Proc) -> int:
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
    os.killpg(proc.popen.pid, signal.SIGINT)
    return proc.wait(STOP_TIMEOUT)


def assert_ports_free(ports: dict[str, int]) -> None:
    busy = {name: port for name, port in ports.items() if not port_is_free(port)}
    assert not busy, f"still bound after the runner exited: {busy}"


def test_runner_serves_then_stops_cleanly_on_ctrl_c(
    running_stack: Proc, data_dir: Path, ports: dict[str, int]
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
    for name in ("rust_compute", "py_gateway", "envoy", "web"):
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
    assert_ports_free(ports)
    # The embedded server stopped with the runner, and its data stayed.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert (data_dir / "postgres" / "PG_VERSION").exists()


def test_runner_stops_everything_when_a_child_dies(
    running_stack: Proc, ports: dict[str, int]
) -> None:
    (compute,) = [
        child
        for child in psutil.Process(running_stack.popen.pid).children()
        if child.name() == "rust_compute"
    ]
    compute.kill()

    code = running_stack.wait(STOP_TIMEOUT)

    output = running_stack.output()
    assert code == 1, output
    assert "rust_compute was killed by signal 9" in output
    assert "Traceback" not in output
    assert_ports_free(ports)


def run_to_failure(env: dict[str, str], processes: ProcessGroup) -> tuple[int, str]:
    runner = processes.start("run_stack", [sys.executable, RUNNER], env)
    code = runner.wait(60)
    return code, runner.output()


def assert_one_clear_line(code: int, output: str, *needles: str) -> None:
    assert code == 1, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("run_stack: ")
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output


def test_busy_port_is_one_clear_line_and_starts_nothing(
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: ProcessGroup
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
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: ProcessGroup
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
    tmp_path: Path, ports: dict[str, int], processes: ProcessGroup
) -> None:
    env = runner_env(tmp_path / "data", ports, NUELL_COMPUTE_BIN=str(tmp_path / "rust_compute"))

    code, output = run_to_failure(env, processes)

    assert_one_clear_line(code, output, "rust_compute", "cargo build --release")


def test_bad_setting_is_one_clear_line(
    tmp_path: Path, ports: dict[str, int], processes: ProcessGroup
) -> None:
    env = runner_env(tmp_path / "data", ports, NUELL_EDGE_HTTP_PORT="eighty")

    code, output = run_to_failure(env, processes)

    assert_one_clear_line(code, output, "NUELL_EDGE_HTTP_PORT")


def test_missing_tls_certificate_of_your_own_is_one_clear_line(
    compute_bin: Path, tmp_path: Path, ports: dict[str, int], processes: ProcessGroup
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
