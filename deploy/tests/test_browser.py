"""The browser page, served as `make run` serves it, driven by a real headless
Chromium (web/tests/browser.test.mjs) through the session's Envoy edge to
the real gateway and database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
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


@pytest.fixture
def restart_url(session_processes: Launcher) -> Iterator[str]:
    """POST here and the gateway is killed outright (SIGKILL) and started again; the
    answer comes once it is healthy. The live-posts browser test restarts it with the
    page open."""

    class Restart(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            running = session_processes["py_gateway"]
            os.killpg(running.pid, signal.SIGKILL)
            running.popen.wait(timeout=10)
            session_processes.start(running.service)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Restart)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/restart-gateway"
    server.shutdown()


def test_the_flow_in_chromium(
    browser_tools: str,
    page_url: str,
    edge: Edge,
    backend: Backend,
    restart_url: str,
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
        "NUELL_RESTART_GATEWAY_URL": restart_url,
    }

    result = subprocess.run(
        [browser_tools, "--test", "--test-reporter=tap", "tests/"],
        cwd=WEB_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=BROWSER_TEST_TIMEOUT,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{output}\nscreenshots of failures: {tmp_path / 'screenshots'}"
    assert "# fail 0" in output, output
    assert "# pass 0" not in output, output
    # The foreign page's calls were refused by the edge and never reached the gateway.
    assert not user_exists(backend.database_url, foreign_email)
    assert edge.stats()["http.edge_http.rbac.denied"] > refused_before


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
