"""The real rust_compute binary, started and stopped by tests through the
stack's own launcher and declaration (deploy/launcher.py, deploy/stack.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from deploy import stack
from deploy.launcher import Launcher, LaunchError, free_port
from deploy.settings import Address, StackSettings

__all__ = ["RustCompute", "free_port"]


class RustCompute:
    """One rust_compute process; can be killed and started again on the same port."""

    def __init__(
        self,
        port: int = 0,
        *,
        env: Mapping[str, str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        """`env` adds to the environment; `stderr` receives the JSON logs alone."""
        if not stack.COMPUTE_BIN.exists():
            raise RuntimeError(f"{stack.COMPUTE_BIN} is missing: run `make build` first")
        self.port = port or free_port()
        self._env = dict(env or {})
        self._stderr = stderr
        self._launcher = Launcher(
            Path(tempfile.mkdtemp(prefix="rust-compute-")), say=lambda _: None
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RustCompute:
        # Its metrics on a free port of their own: several run side by side in tests.
        settings = StackSettings(
            compute=Address("127.0.0.1", self.port),
            compute_metrics=Address("127.0.0.1", free_port()),
        )
        service = stack.compute_service(settings, {**os.environ, **self._env})
        if self._stderr is not None:  # stdout (the `listening on` line) stays in the launcher's log
            service = dataclasses.replace(
                service,
                argv=("/bin/sh", "-c", 'exec "$0" "$@" 2>>"$COMPUTE_STDERR"', *service.argv),
                env={**(service.env or {}), "COMPUTE_STDERR": self._stderr.name},
            )
        try:
            self._launcher.start(service)
        except LaunchError as exc:
            raise RuntimeError(f"rust_compute did not start: {exc}") from None
        return self

    def kill(self) -> None:
        """Gone at once, as in a crash."""
        if (running := self._launcher.running.get("rust_compute")) and running.popen.poll() is None:
            os.kill(running.pid, signal.SIGKILL)
            running.popen.wait(timeout=10)

    def stop(self) -> None:
        self._launcher.stop()
        shutil.rmtree(self._launcher.log_dir, ignore_errors=True)
