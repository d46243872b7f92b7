"""The browser page, served as `make run` serves it, driven by a real headless
Chromium (web/tests/*.test.mjs, over gRPC-Web and over Connect) through the
session's Envoy edge to the real gateway and database."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from deploy import stack
from deploy.launcher import Launcher
from deploy.tests.support import (
    WEB_DIR,
    Backend,
    Edge,
    base_env,
    health_status,
    http_request,
    user_exists,
)

CHROMIUM = Path(os.environ.get("NUELL_CHROMIUM", "/usr/bin/chromium"))
BROWSER_TEST_TIMEOUT = 300


@pytest.fixture(scope="module")
def browser_tools() -> str:
    """node, the built page and Chromium; a missing one fails with how to get it."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's package "
            "(`sudo apt-get install -y chromium`) or set NUELL_CHROMIUM to a Chromium binary. "
            "The browser tests never download a browser of their own.",
            pytrace=False,
        )
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: install Node.js 20 with npm", pytrace=False)
    missing = [
        path
        for path in (WEB_DIR / "node_modules" / "playwright-core", WEB_DIR / "dist" / "index.html")
        if not path.exists()
    ]
    if missing:
        pytest.fail(
            f"the page is not built ({', '.join(map(str, missing))} missing): run `make web`",
            pytrace=False,
        )
    return node


@pytest.fixture(scope="module")
def page_url(edge: Edge, module_processes: Launcher) -> str:
    """The built page on the origin the session edge allows (`edge.settings.web`)."""
    module_processes.start(stack.web_service(edge.settings, base_env()))
    url = f"http://localhost:{edge.settings.web.port}"
    return url


class GatewayRestarts:
    """A URL the browser test POSTs to have the gateway killed outright (SIGKILL) and
    started again; the answer comes once it is healthy. The restart itself runs on
    the test's own thread (`serve_while`): the launcher ties each service to the
    thread that starts it (PR_SET_PDEATHSIG), and a helper thread ends."""

    def __init__(self, processes: Launcher) -> None:
        self.processes, self.asked = processes, queue.Queue[threading.Event]()
        asked = self.asked

        class Restart(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                done = threading.Event()
                asked.put(done)
                self.send_response(204 if done.wait(120) else 504)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Restart)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/restart-gateway"

    def serve_while(self, process: subprocess.Popen[bytes], timeout: float) -> int:
        """Restart the gateway whenever asked, until `process` exits; its exit code."""
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the browser tests did not finish within {timeout:g} s")
            with contextlib.suppress(queue.Empty):
                done = self.asked.get(timeout=0.2)
                running = self.processes["py_gateway"]
                os.killpg(running.pid, signal.SIGKILL)
                running.popen.wait(timeout=10)
                self.processes.start(running.service)
                done.set()
        return process.returncode


@pytest.fixture
def gateway_restarts(session_processes: Launcher) -> Iterator[GatewayRestarts]:
    restarts = GatewayRestarts(session_processes)
    yield restarts
    restarts.server.shutdown()


def test_the_flow_in_chromium(
    browser_tools: str,
    page_url: str,
    edge: Edge,
    backend: Backend,
    gateway_restarts: GatewayRestarts,
    tmp_path: Path,
) -> None:
    foreign_email = f"foreign-{uuid.uuid4().hex[:12]}@example.com"
    refused_before = edge.stats().get("http.edge_http.rbac.denied", 0)
    env = {
        **os.environ,
        "NUELL_PAGE_URL": page_url,
        "NUELL_CHROMIUM": str(CHROMIUM),
        "NUELL_FOREIGN_EMAIL": foreign_email,
        "NUELL_BROWSER_ARTIFACTS": str(tmp_path / "screenshots"),
        "NUELL_MAILBOX_URL": backend.mailbox,
        "NUELL_RESTART_GATEWAY_URL": gateway_restarts.url,
    }

    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            [browser_tools, "--test", "--test-reporter=tap", "tests/"],
            cwd=WEB_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        code = gateway_restarts.serve_while(node, BROWSER_TEST_TIMEOUT)

    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, f"{output}\nscreenshots of failures: {tmp_path / 'screenshots'}"
    assert "# fail 0" in output, output
    assert "# pass 0" not in output, output
    # The foreign page's calls were refused by the edge and never reached the gateway.
    assert not user_exists(backend.database_url, foreign_email)
    assert edge.stats()["http.edge_http.rbac.denied"] > refused_before
    # The restarted gateway serves the tests after this one.
    assert health_status(backend.gateway) == "SERVING"


# --- the page server ----------------------------------------------------------------


def test_page_server_sends_security_headers(page_url: str, edge: Edge) -> None:
    reply = http_request(edge.settings.web.port, "GET", "/", {})

    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert f"connect-src 'self' http://localhost:{edge.http_port}" in policy
    assert "frame-ancestors 'none'" in policy
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert "server" not in reply.headers


def test_page_server_tells_the_page_where_the_edge_is(page_url: str, edge: Edge) -> None:
    reply = http_request(edge.settings.web.port, "GET", "/config.json", {})

    assert reply.status == 200
    assert reply.body == f'{{"edgePort": {edge.http_port}}}'.encode()


@pytest.mark.parametrize(
    "path", ["/../settings.py", "/%2e%2e/%2e%2e/deploy/settings.py", "/missing.js", "/gen/"]
)
def test_page_server_serves_only_the_page(page_url: str, edge: Edge, path: str) -> None:
    reply = http_request(edge.settings.web.port, "GET", path, {})

    assert reply.status == 404
    assert reply.headers["x-content-type-options"] == "nosniff"


def test_page_server_refuses_other_methods(page_url: str, edge: Edge) -> None:
    reply = http_request(edge.settings.web.port, "POST", "/", {}, b"x")

    assert reply.status == 501
    assert reply.headers["x-frame-options"] == "DENY"
    assert "server" not in reply.headers
