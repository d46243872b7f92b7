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
import functools
import io
import json
import mimetypes
import os
import signal
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, ClassVar
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


class PageHandler(SimpleHTTPRequestHandler):
    config: ClassVar[bytes]
    headers_to_send: ClassVar[dict[str, str]]
    protocol_version = "HTTP/1.1"
    # Malformed requests, unsupported methods and 404s: plain text, no HTML.
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def send_head(self) -> BinaryIO | None:
        path = unquote(urlsplit(self.path).path)
        if path == "/config.json":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            return io.BytesIO(self.config)
        # Files under the root only: no directory listings, no symlinks out of it.
        root = Path(self.directory)
        candidate = (root / (path.lstrip("/") or "index.html")).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return super().send_head()

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        return kind

    def send_response(self, code: int, message: str | None = None) -> None:
        # send_response_only: no `Server` header naming Python and its version.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def end_headers(self) -> None:
        for name, value in self.headers_to_send.items():
            self.send_header(name, value)
        super().end_headers()

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
    ports = (("http", args.edge_port), ("https", args.edge_tls_port))
    hosts = ("localhost", "127.0.0.1")
    origins = [f"{scheme}://{host}:{port}" for host in hosts for scheme, port in ports if port]
    config: dict[str, object] = {"edgePort": args.edge_port}
    if args.edge_url:
        config = {"edgeUrl": args.edge_url}
        origins = [args.edge_url.rstrip("/")]

    PageHandler.config = json.dumps(config).encode()
    PageHandler.headers_to_send = page_headers(origins)
    handler = functools.partial(PageHandler, directory=str(root))
    server = ThreadingHTTPServer((args.host, args.port), handler)
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
