"""The real `python -m nuell_gateway` process: start, stop, and its one-line refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import URL

from tests.conftest import TEST_JWT_KEYS
from tests.utils.database import throwaway_database


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUELL_")}
    env.pop("DATABASE_URL", None)
    env["NUELL_JWT_KEYS"] = TEST_JWT_KEYS
    env["NUELL_METRICS_ADDR"] = "127.0.0.1:0"
    env.update(overrides)
    return env


def _assert_nobody_listens(host: str, port: int) -> None:
    """A new server can listen on the port: no process of the old one holds it.

    SO_REUSEADDR, as every server sets it: connections the old server closed
    linger in TIME_WAIT on the port and would refuse a plain bind, though
    nobody listens there any more.
    """
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, port))
        again.listen()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nuell_gateway", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextmanager
def _gateway_process(
    env: dict[str, str], stderr: IO[str] | int = subprocess.PIPE
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "nuell_gateway", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("nuell_gateway listening on "), (line, process.stderr)
        yield process, line.rsplit(" ", 1)[1].strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_missing_database_url_is_one_clear_line() -> None:
    line = _one_clear_line(_run(_env()))
    assert "DATABASE_URL" in line


def test_bad_settings_are_named_without_echoing_secrets() -> None:
    env = _env(DATABASE_URL="mysql://admin:hunter2-secret@db/x", NUELL_GATEWAY_ADDR="nowhere")
    line = _one_clear_line(_run(env))
    assert "DATABASE_URL" in line
    assert "NUELL_GATEWAY_ADDR" in line
    assert "hunter2" not in line


def test_unreachable_database_is_one_clear_line_without_password() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _env(DATABASE_URL=f"postgresql://nuell:s3cret-pw@127.0.0.1:{port}/nuell")
    line = _one_clear_line(_run(env, "serve"))
    assert "cannot reach the database" in line
    assert "s3cret-pw" not in line


def test_unmigrated_database_is_refused_with_what_to_do(database_server: URL) -> None:
    with throwaway_database(database_server) as url:
        env = _env(DATABASE_URL=url.render_as_string(hide_password=False))
        line = _one_clear_line(_run(env, "serve"))
        assert "make migrate" in line

        migrated = _run(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr


def test_busy_port_is_one_clear_line(database_url: URL) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _env(
            DATABASE_URL=database_url.render_as_string(hide_password=False),
            NUELL_GATEWAY_ADDR=f"127.0.0.1:{port}",
        )
        line = _one_clear_line(_run(env, "serve"))
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_process_cleanly(database_url: URL, signum: signal.Signals) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_GATEWAY_ADDR="127.0.0.1:0",
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
    )
    with _gateway_process(env) as (process, address):
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        _, stderr = process.communicate()
    assert "Traceback" not in stderr
    host, port = address.rsplit(":", 1)
    _assert_nobody_listens(host, int(port))


def test_create_admin_makes_an_admin_who_can_log_in(database_url: URL) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_BOOTSTRAP_ADMIN_PASSWORD="Admin-Password-2026",
    )
    email = f"admin-{os.getpid()}-{time.monotonic_ns()}@example.com"
    created = _run(env, "create-admin", "--email", email)
    assert created.returncode == 0, created.stderr
    assert f"created admin {email}" in created.stdout

    again = _one_clear_line(_run(env, "create-admin", "--email", email))
    assert "exists already" in again


def test_create_admin_refuses_a_weak_password_without_echoing_it(database_url: URL) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_BOOTSTRAP_ADMIN_PASSWORD="weakpass",
    )
    line = _one_clear_line(_run(env, "create-admin", "--email", "weak@example.com"))
    assert "password" in line
    assert "weakpass" not in line


def test_create_admin_without_a_password_or_terminal_says_what_to_set(database_url: URL) -> None:
    env = _env(DATABASE_URL=database_url.render_as_string(hide_password=False))
    line = _one_clear_line(_run(env, "create-admin", "--email", "someone@example.com"))
    assert "NUELL_BOOTSTRAP_ADMIN_PASSWORD" in line


def _workers_of(process: subprocess.Popen[str]) -> list[psutil.Process]:
    children = psutil.Process(process.pid).children()
    return [
        c
        for c in children
        if "multiprocessing" in " ".join(c.cmdline()) and "spawn_main" in " ".join(c.cmdline())
    ]


def test_workers_share_the_port_and_stop_together(database_url: URL) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_GATEWAY_ADDR="127.0.0.1:0",
        NUELL_WORKERS="2",
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
    )
    with _gateway_process(env) as (process, address):
        workers = _workers_of(process)
        assert len(workers) == 2
        port = int(address.rsplit(":", 1)[1])
        # A local subchannel pool each: grpc would otherwise share one connection.
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(address, options=own_connection) for _ in range(16)]
        try:
            for channel in channels:  # each its own connection, placed by the kernel
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            accepted = [
                sum(
                    1
                    for c in w.net_connections("tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
                )
                for w in workers
            ]
        finally:
            for channel in channels:
                channel.close()
        # All 16 on one worker would happen 1 time in 32768.
        assert all(count > 0 for count in accepted), accepted
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    _assert_nobody_listens("127.0.0.1", port)


def test_a_dead_worker_stops_the_gateway_with_a_clear_line(database_url: URL) -> None:
    env = _env(
        DATABASE_URL=database_url.render_as_string(hide_password=False),
        NUELL_GATEWAY_ADDR="127.0.0.1:0",
        NUELL_WORKERS="2",
        NUELL_SHUTDOWN_GRACE_SECONDS="2",
    )
    with _gateway_process(env) as (process, _address):
        victim, survivor = _workers_of(process)
        victim.kill()
        assert process.wait(timeout=15) == 1
        _, stderr = process.communicate()
        assert "exited with status -9" in stderr
        assert "Traceback" not in stderr
        survivor.wait(timeout=10)
