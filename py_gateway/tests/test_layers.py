"""The gateway's layers as drawn in its package docstring: only transport
modules know grpc, so domain rules and stores can be read, reused and
tested without it, and errors become gRPC statuses in boundary.py alone."""

from __future__ import annotations

import ast
from pathlib import Path

import nuell_gateway

PACKAGE = Path(nuell_gateway.__file__).parent
# Where grpc belongs: the call boundary, the server's assembly, reflection,
# the client to rust_compute, the servicers, and the spans of gRPC calls.
TRANSPORT = {"boundary", "server", "reflection", "compute_client", "tracing", "services"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _is_transport(path: Path) -> bool:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py") in TRANSPORT


def test_no_domain_or_store_module_imports_grpc() -> None:
    checked = [path for path in _modules() if not _is_transport(path)]
    assert {"errors.py", "accounts.py", "credentials.py", "posts.py"} <= {p.name for p in checked}
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in _imported(path) if name.split(".")[0].startswith("grpc")
        )
        for path in checked
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_only_the_boundary_builds_grpc_statuses() -> None:
    builders = {
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if {"grpc_status", "grpc_status.rpc_status"} & _imported(path)
        or "abort_with_status" in path.read_text(encoding="utf-8")
    }
    assert builders == {"boundary.py"}
