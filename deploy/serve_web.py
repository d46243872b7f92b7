"""Serve the browser page (web/dist) the way a production static host should.

    python -m deploy.serve_web --root web/dist --port 3000 --edge-port 8080

A small static server for `make run` and the browser tests: GET and HEAD of
the files under --root, nothing else (no directory listings, no paths out
of the root), every answer with the security headers below, and
`/config.json` telling the page where the edge is. Under `/api/` it serves
a reader (Swagger UI, from --api-assets) for the REST/JSON API's OpenAPI
document (--openapi, which `make gen` writes), served as
`/api/openapi.json` with its `servers` naming the edge. It prints
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
from typing import Any, BinaryIO, ClassVar
from urllib.parse import unquote, urlsplit

from deploy.settings import OPENAPI, REPO

API_PAGE_DIR = Path(__file__).resolve().parent / "api_page"
# swagger-ui-dist, an npm dependency of web/.
SWAGGER_UI_DIR = REPO / "web" / "node_modules" / "swagger-ui-dist"


def page_headers(edge_origins: list[str], *, data_images: bool = False) -> dict[str, str]:
    """The page may load its own files and talk to the edge; nothing else.
    `data_images`: also `data:` images, which Swagger UI's stylesheet draws
    its icons with (an image cannot run script)."""
    connect = " ".join(["'self'", *edge_origins])
    images = "'self' data:" if data_images else "'self'"
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; "
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


def api_files(assets: Path) -> dict[str, Path]:
    """What `/api/` serves from disk: the page and the two Swagger UI files
    it loads, nothing else of the package."""
    return {
        "/api/": API_PAGE_DIR / "index.html",
        "/api/api.js": API_PAGE_DIR / "api.js",
        "/api/swagger-ui.css": assets / "swagger-ui.css",
        "/api/swagger-ui-bundle.js": assets / "swagger-ui-bundle.js",
        "/api/favicon.png": assets / "favicon-32x32.png",
    }


class PageHandler(SimpleHTTPRequestHandler):
    config: ClassVar[bytes]
    headers_to_send: ClassVar[dict[str, str]]
    api_headers: ClassVar[dict[str, str]]
    # The OpenAPI document without `servers`; None when it is missing.
    api_document: ClassVar[dict[str, Any] | None] = None
    api_paths: ClassVar[dict[str, Path]] = {}
    edge_origins: ClassVar[list[str]] = []
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
        if path == "/api" or path.startswith("/api/"):
            return self.send_api(path)
        # Files under the root only: no directory listings, no symlinks out of it.
        root = Path(self.directory)
        candidate = (root / (path.lstrip("/") or "index.html")).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return super().send_head()

    def send_api(self, path: str) -> BinaryIO | None:
        if path == "/api":
            # The page's relative URLs need the trailing slash.
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", "/api/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path == "/api/openapi.json" and self.api_document is not None:
            document = self.api_document
            served = {"openapi": document["openapi"], "info": document["info"]}
            served |= {"servers": self.servers()} | document
            body = json.dumps(served, ensure_ascii=False, indent=2).encode() + b"\n"
            return self.send_bytes(body, "application/json; charset=utf-8")
        file = self.api_paths.get(path)
        if file is None or not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        return self.send_bytes(file.read_bytes(), self.guess_type(file))

    def send_bytes(self, body: bytes, content_type: str) -> BinaryIO:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def servers(self) -> list[dict[str, str]]:
        """The edge's origins, the one on the host this page was asked by
        first (the one "Try it out" uses), as the browser page finds it."""
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname

        def other_host(origin: str) -> bool:
            return urlsplit(origin).hostname != host

        return [{"url": origin} for origin in sorted(self.edge_origins, key=other_host)]

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
        # No path yet when the request line itself was malformed.
        path = urlsplit(getattr(self, "path", "")).path
        api = path == "/api" or path.startswith("/api/")
        for name, value in (self.api_headers if api else self.headers_to_send).items():
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
    parser.add_argument(
        "--openapi", type=Path, default=OPENAPI, help="the OpenAPI document for /api/"
    )
    parser.add_argument(
        "--api-assets", type=Path, default=SWAGGER_UI_DIR, help="swagger-ui-dist, for /api/"
    )
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
    PageHandler.api_headers = page_headers(origins, data_images=True)
    PageHandler.edge_origins = origins
    PageHandler.api_paths = api_files(args.api_assets.resolve())
    # The page works without the API reader: say what is missing and go on.
    try:
        PageHandler.api_document = json.loads(args.openapi.read_bytes())
    except FileNotFoundError:
        print(f"serve_web: {args.openapi} is missing, no /api/: run `make gen`", file=sys.stderr)
    except ValueError as exc:
        print(f"serve_web: {args.openapi} is not JSON, no /api/: {exc}", file=sys.stderr)
    if not (args.api_assets / "swagger-ui-bundle.js").is_file():
        print(
            f"serve_web: {args.api_assets} is missing, /api/ cannot render: "
            "install web's npm dependencies (make web)",
            file=sys.stderr,
        )
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
