"""The OpenAPI document (build/openapi.json, `make gen`) at /api/ of the page's
static server, read by a real Chromium. The document itself is tested in
py_gateway/tests/test_openapi.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.launcher import free_port
from deploy.settings import OPENAPI, REPO
from deploy.tests.support import WEB_DIR, http_request, wait_for

CHROMIUM = Path(os.environ.get("NUELL_CHROMIUM", "/usr/bin/chromium"))
SWAGGER_UI = WEB_DIR / "node_modules" / "swagger-ui-dist"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    if not OPENAPI.is_file():
        pytest.fail(f"{OPENAPI} is missing: run `make gen`", pytrace=False)
    document: dict[str, Any] = json.loads(OPENAPI.read_bytes())
    return document


def operation_paths(doc: dict[str, Any]) -> list[str]:
    return sorted(path for path, item in doc["paths"].items() for _ in item)


# The reader at /api/ ----------------------------------------------------


@dataclass
class WebServer:
    port: int
    edge_port: int
    stderr: Path


@contextmanager
def serve_web(tmp_path: Path, *extra: str | Path) -> Iterator[WebServer]:
    if not (WEB_DIR / "dist" / "index.html").is_file():
        pytest.fail("the page is not built: run `make web`", pytrace=False)
    port, edge_port = free_port(), free_port()
    stdout, stderr = tmp_path / "web.out", tmp_path / "web.err"
    command = (
        sys.executable,
        "-m",
        "deploy.serve_web",
        "--root",
        WEB_DIR / "dist",
        "--port",
        str(port),
        "--edge-port",
        str(edge_port),
        *extra,
    )
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"serve_web exited: {stderr.read_text()}")
            return "listening on" in stdout.read_text()

        wait_for(listening, timeout=30, what="serve_web to listen")
        yield WebServer(port, edge_port, stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_static_server_serves_the_reader_and_the_document(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    if not (SWAGGER_UI / "swagger-ui-bundle.js").is_file():
        pytest.fail("swagger-ui-dist is not installed: npm install in web/", pytrace=False)
    with serve_web(tmp_path) as web:
        page = http_request(web.port, "GET", "/api/", {})
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script src="swagger-ui-bundle.js">' in page.body
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "style-src 'self';" in policy
        assert "img-src 'self' data:;" in policy
        assert "unsafe" not in policy
        # The browser page keeps its stricter policy.
        assert (
            "img-src 'self';"
            in http_request(web.port, "GET", "/", {}).headers["content-security-policy"]
        )

        reply = http_request(
            web.port, "GET", "/api/openapi.json", {"Host": f"localhost:{web.port}"}
        )
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json; charset=utf-8"
        served = json.loads(reply.body)
        servers = [server["url"] for server in served.pop("servers")]
        assert served == doc
        assert servers == [f"http://localhost:{web.edge_port}", f"http://127.0.0.1:{web.edge_port}"]
        # The edge on the host the page was asked by comes first.
        other = json.loads(http_request(web.port, "GET", "/api/openapi.json", {}).body)
        assert other["servers"][0] == {"url": f"http://127.0.0.1:{web.edge_port}"}

        script = http_request(web.port, "GET", "/api/swagger-ui-bundle.js", {})
        assert script.status == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.body == (SWAGGER_UI / "swagger-ui-bundle.js").read_bytes()

        moved = http_request(web.port, "GET", "/api", {})
        assert (moved.status, moved.headers["location"]) == (301, "/api/")
        # Only the files the page loads, nothing else of the package or around it.
        for path in (
            "/api/index.html",
            "/api/package.json",
            "/api/swagger-ui.js.map",
            "/api/../api/api.js",
            "/api/%2e%2e/index.html",
            "/api/openapi.yaml",
        ):
            refused = http_request(web.port, "GET", path, {})
            assert refused.status == 404, path
            assert refused.headers["content-type"] == "text/plain; charset=utf-8"
        assert http_request(web.port, "POST", "/api/openapi.json", {}).status == 501


def test_without_the_document_the_page_still_serves_and_the_reason_is_printed(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "openapi.json"
    with serve_web(tmp_path, "--openapi", missing) as web:
        assert http_request(web.port, "GET", "/", {}).status == 200
        assert http_request(web.port, "GET", "/api/openapi.json", {}).status == 404
        assert f"{missing} is missing, no /api/: run `make gen`" in web.stderr.read_text()


# A node script with playwright-core (web's dev dependency): loads the
# reader, counts the operations it shows, opens one, and reports every
# console error, failed request and page error (CSP refusals among them).
READER_CHECK = """
import { chromium } from "playwright-core";
const [url, executablePath] = process.argv.slice(1);
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`failed: ${r.url()}`));
  await page.goto(url);
  await page.waitForSelector(".opblock-summary-path", { timeout: 30000 });
  const paths = await page.locator(".opblock-summary-path").allInnerTexts();
  await page.locator(".opblock-summary", { hasText: "/v1/users/{userId}" }).click();
  await page.getByText("UpdateUser changes the fields").first().waitFor({ timeout: 10000 });
  await page.waitForTimeout(500);
  console.log(JSON.stringify({ paths, problems }));
} finally {
  await browser.close();
}
"""


def test_chromium_renders_every_operation_under_the_strict_policy(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if not CHROMIUM.exists() or node is None:
        pytest.fail(f"Chromium ({CHROMIUM}) and node are needed", pytrace=False)
    if not (SWAGGER_UI / "swagger-ui-bundle.js").is_file():
        pytest.fail("swagger-ui-dist is not installed: npm install in web/", pytrace=False)
    with serve_web(tmp_path) as web:
        run = subprocess.run(
            (
                node,
                "--input-type=module",
                "-e",
                READER_CHECK,
                "--",
                f"http://localhost:{web.port}/api/",
                CHROMIUM,
            ),
            cwd=WEB_DIR,  # where playwright-core resolves from
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    shown = json.loads(run.stdout.strip().splitlines()[-1])
    assert shown["problems"] == []
    assert sorted(shown["paths"]) == operation_paths(doc)
