"""The real rust_compute binary, started and stopped by tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO

BINARY = Path(__file__).resolve().parents[3] / "rust_compute/target/release/rust_compute"


class RustCompute:
    """One rust_compute process; can be killed and started again on the same port."""

    def __init__(
        self,
        port: int = 0,
        *,
        env: Mapping[str, str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        """`env` adds to the environment; `stderr` receives the JSON logs."""
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `make build` first")
        self.port = port
        self._env = dict(env or {})
        self._stderr = stderr
        self._process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RustCompute:
        self._process = subprocess.Popen(
            [str(BINARY), "--addr", f"127.0.0.1:{self.port}"],
            # Its metrics on any free port: several run side by side in tests.
            env={**os.environ, "NUELL_COMPUTE_METRICS_ADDR": "127.0.0.1:0", **self._env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self._stderr is None else self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("rust_compute listening on "):
            self._process.kill()
            raise RuntimeError(f"rust_compute did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def kill(self) -> None:
        """Gone at once, as in a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
