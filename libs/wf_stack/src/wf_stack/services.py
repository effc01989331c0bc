"""The suite's services as real subprocesses, for integration and fault tests.

```python
with ServiceProcess.start("orchestrator", env={...}, port=free_port()) as orchestrator:
    ...
    orchestrator.kill()          # SIGKILL, no clean-up: what a crash looks like
    orchestrator.restart()       # same command, same port
```

Each process is ``python -m <module>`` with the given environment, its output in a log file; start
waits (bounded) for ``GET /health/ready`` to answer 200.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from wf_stack._os import die_with_parent
from wf_stack.errors import ServerStartError

__all__ = ["ServiceProcess"]


class ServiceProcess:
    """One service (``definition_registry``, ``orchestrator``, ``task_inbox``) as a child process."""

    def __init__(self, module: str, *, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.module = module
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        module: str,
        /,
        *,
        env: Mapping[str, str],
        port: int,
        timeout: float = 60.0,
        log_dir: Path | None = None,
    ) -> Self:
        """Start ``python -m module`` and wait until it is ready."""
        directory = log_dir or Path(tempfile.mkdtemp(prefix=f"wf-{module}-"))
        service = cls(module, env=env, port=port, log_path=directory / f"{module}-{port}.log")
        service._spawn(timeout=timeout)
        return service

    @property
    def url(self) -> str:
        """The service's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process id."""
        assert self._proc is not None
        return self._proc.pid

    def _spawn(self, *, timeout: float) -> None:
        environment = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [*die_with_parent("KILL"), sys.executable, "-m", self.module],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    self.module,
                    f"exited with {self._proc.returncode}",
                    log_tail=self.log_tail(),
                    log_path=self.log_path,
                )
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise ServerStartError(
            self.module, f"not ready after {timeout}s", log_tail=self.log_tail(), log_path=self.log_path
        )

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no clean-up, no drain, transactions in flight are lost."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, timeout: float = 60.0) -> None:
        """Stop (if running) and start again with the same command, environment and port."""
        self.stop()
        self._spawn(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
