"""Serve the browser page (web/dist) the way a production static host should.

    python -m deploy.serve_web --root web/dist --port 3000 --edge-port 8080

A small static server for `make run` and the browser tests: GET and HEAD of
the files under --root, nothing else (no directory listings, no paths out
of the root), every answer with the security headers below, and
`/config.json` telling the page where the edge is. It prints
`nuell_web listening on HOST:PORT` once bound (port 0: any free port) and
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit


def page_headers(edge_origins: list[str]) -> dict[str, str]:
    """The page may load its own files and talk to the edge; nothing else."""
    connect = " ".join(["'self'", *edge_origins])
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        # Development: every reload sees the latest build.
        "Cache-Control": "no-cache",
    }


class PageHandler(BaseHTTPRequestHandler):
    root: ClassVar[Path]
    config: ClassVar[bytes]
    headers_to_send: ClassVar[dict[str, str]]
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def _serve(self, *, with_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/config.json":
            self._answer(HTTPStatus.OK, "application/json", self.config, with_body)
            return
        file = self._file(path)
        if file is None:
            self._answer(
                HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n", with_body
            )
            return
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        self._answer(HTTPStatus.OK, kind, file.read_bytes(), with_body)

    def _file(self, path: str) -> Path | None:
        relative = path.lstrip("/") or "index.html"
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def _answer(self, status: HTTPStatus, kind: str, body: bytes, with_body: bool) -> None:
        # send_response_only: no `Server` header naming Python and its version.
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in self.headers_to_send.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests and unsupported methods: same headers, no HTML.
        self.close_connection = True
        body = f"{code} {message or HTTPStatus(code).phrase}\n".encode()
        self._answer(HTTPStatus(code), "text/plain; charset=utf-8", body, with_body=True)

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the built page (web/dist)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--edge-port", type=int, required=True, help="the edge's plaintext port")
    parser.add_argument("--edge-tls-port", type=int, help="the edge's TLS port, if any")
    parser.add_argument("--edge-url", help="the edge's URL when it is not this host")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    if not (root / "index.html").is_file():
        print(
            f"serve_web: {root}/index.html is missing: build the page (make web)", file=sys.stderr
        )
        return 1
    origins = []
    for host in ("localhost", "127.0.0.1"):
        origins.append(f"http://{host}:{args.edge_port}")
        if args.edge_tls_port:
            origins.append(f"https://{host}:{args.edge_tls_port}")
    config: dict[str, object] = {"edgePort": args.edge_port}
    if args.edge_url:
        config = {"edgeUrl": args.edge_url}
        origins = [args.edge_url.rstrip("/")]

    PageHandler.root = root
    PageHandler.config = json.dumps(config).encode()
    PageHandler.headers_to_send = page_headers(origins)
    server = ThreadingHTTPServer((args.host, args.port), PageHandler)
    server.daemon_threads = True
    print(f"nuell_web listening on {args.host}:{server.server_port}", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever, so it must not run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
