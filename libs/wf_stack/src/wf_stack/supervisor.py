"""A tiny process supervisor for `make dev`: start units in order, prefix their output, stop them all.

A *unit* is anything with a name that can be started, watched and stopped (`Unit`). Two kinds
cover the dev stack:

- `ServerUnit` wraps a server from this package (`PostgresServer`, `NatsServer`): it starts the
  server through a callable and follows its log file;
- `CommandUnit` runs a command (a service, the example worker) with its output piped.

`DevStack` starts units in the order they were added (a later unit may read an earlier one's
addresses, e.g. through the ``env`` callable of a `CommandUnit`), prints every line of output
prefixed with the unit's name, and stops them in reverse order on Ctrl-C, SIGTERM, or when one of
them exits on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Generic, Protocol, Self, TextIO, TypeVar

from wf_stack._os import die_with_parent, ensure_port_free
from wf_stack.errors import ServerStateError, StackError

__all__ = ["CommandUnit", "DevStack", "ManagedServer", "PrefixedOutput", "ServerUnit", "Unit"]


class PrefixedOutput:
    """Writes lines from many threads to one stream as ``name | line``, never interleaving a line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        """Create the writer.

        Args:
            stream: Where to write; standard output by default.
        """
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()
        self._width = 0

    def register(self, name: str) -> None:
        """Make room for `name` so that the columns line up."""
        self._width = max(self._width, len(name))

    def line(self, name: str, text: str) -> None:
        """Write one line of `name`'s output (a trailing newline is added)."""
        with self._lock:
            self._stream.write(f"{name:<{self._width}} | {text.rstrip()}\n")
            self._stream.flush()


class Unit(Protocol):
    """Something `DevStack` starts, watches and stops."""

    @property
    def name(self) -> str:
        """Shown in front of every line of the unit's output."""
        ...

    def start(self, output: PrefixedOutput) -> None:
        """Start and return once the unit is ready (or raise)."""
        ...

    def stop(self) -> None:
        """Stop; must be safe to call when not started or already stopped."""
        ...

    def exit_code(self) -> int | None:
        """None while running, else how it ended."""
        ...

    def summary(self) -> str:
        """One line for the start-up banner (its URL, say)."""
        ...


class ManagedServer(Protocol):
    """What `ServerUnit` needs of a server: `PostgresServer` and `NatsServer` both fit."""

    @property
    def log_path(self) -> Path: ...

    @property
    def log_offset(self) -> int: ...

    @property
    def is_running(self) -> bool: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=ManagedServer)
U = TypeVar("U", bound=Unit)


class ServerUnit(Generic[S]):
    """Runs a server of this package and follows its log.

    Example::

        pg = ServerUnit("postgres", lambda: PostgresServer.start(port=5433), describe=lambda s: s.url)
    """

    def __init__(self, name: str, start: Callable[[], S], *, describe: Callable[[S], str]) -> None:
        """Describe the unit; nothing starts until `start`.

        Args:
            name: The unit's name.
            start: Starts the server and returns it once it is ready.
            describe: Renders the started server for the banner.
        """
        self.name = name
        self._start = start
        self._describe = describe
        self._server: S | None = None
        self._follower: _LogFollower | None = None

    @property
    def server(self) -> S:
        """The running server (for units added later that need its address).

        Raises:
            ServerStateError: The unit was not started.
        """
        if self._server is None:
            raise ServerStateError(f"{self.name} has not been started")
        return self._server

    def start(self, output: PrefixedOutput) -> None:
        """Start the server and begin following its log."""
        self._server = self._start()
        self._follower = _LogFollower(self._server.log_path, self._server.log_offset, self.name, output)
        # Print the start-up log before the "ready" banner that follows this call.
        self._follower.caught_up.wait(timeout=1.0)

    def stop(self) -> None:
        """Stop the server, then print what it logged while stopping."""
        if self._server is not None:
            self._server.stop()
        if self._follower is not None:
            self._follower.close()
            self._follower = None

    def exit_code(self) -> int | None:
        """None while the server runs; 1 if it died."""
        if self._server is None or self._server.is_running:
            return None
        return 1

    def summary(self) -> str:
        """The server as rendered by `describe`."""
        return self._describe(self.server)


class CommandUnit:
    """Runs a command in its own process group, its output piped and prefixed."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        cwd: Path | None = None,
        describe: str = "",
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe the unit; nothing starts until `start`.

        Args:
            name: The unit's name.
            argv: The command.
            env: Extra environment variables, or a callable returning them, called at start so that
                it can read the addresses of units started before this one.
            cwd: The working directory.
            describe: The banner line (a URL, say).
            stop_timeout: Seconds between SIGTERM and SIGKILL on stop.
        """
        self.name = name
        self._argv = list(argv)
        self._env = env
        self._cwd = cwd
        self._describe = describe
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self, output: PrefixedOutput) -> None:
        """Spawn the command (readiness, if any, is the command's business)."""
        extra = self._env() if callable(self._env) else (self._env or {})
        # Own process group: Ctrl-C reaches only the supervisor, which stops units in order; and
        # SIGTERM from the kernel if the supervisor itself is killed.
        self._proc = subprocess.Popen(  # noqa: S603 - the unit's command, no shell
            [*die_with_parent("TERM"), *self._argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **extra},
            cwd=self._cwd,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._reader = threading.Thread(
            target=_pump,
            args=(self._proc.stdout, self.name, output),
            name=f"wf-stack-{self.name}",
            daemon=True,
        )
        self._reader.start()

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the timeout."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)

    def exit_code(self) -> int | None:
        """None while running, else the exit code (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    def summary(self) -> str:
        """The banner line given at construction."""
        return self._describe or " ".join(self._argv)


class DevStack:
    """Starts units in order, stops them in reverse order; see the module docstring."""

    def __init__(self, *, output: TextIO | None = None) -> None:
        """Create an empty stack.

        Args:
            output: Where prefixed output and the banner go; standard output by default.
        """
        self.output = PrefixedOutput(output)
        self._units: list[Unit] = []
        self._ports: dict[int, str] = {}
        self._started: list[Unit] = []
        # A plain flag, not a threading.Event: setting an Event from a signal handler can deadlock
        # on the Event's lock when the signal lands while the main thread holds it.
        self._stop_requested = False

    def add(self, unit: U) -> U:
        """Append a unit (started after those added before it) and return it."""
        self._units.append(unit)
        self.output.register(unit.name)
        return unit

    def need_port(self, port: int, service: str) -> None:
        """Declare a fixed port that must be free before anything starts.

        Checking them all up front fails fast, naming the port, instead of after starting the
        units before the one that needs it.
        """
        self._ports[port] = service

    def start(self) -> None:
        """Start every unit in order; if one fails, stop the ones already started and re-raise.

        Raises:
            PortInUseError: A port declared with `need_port` is taken (nothing was started).
        """
        for port, service in self._ports.items():
            ensure_port_free(port, service=service)
        try:
            for unit in self._units:
                if self._stop_requested:
                    return
                unit.start(self.output)
                self._started.append(unit)
                self.output.line(unit.name, f"ready: {unit.summary()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the started units in reverse order; a failing stop does not keep the others running."""
        while self._started:
            unit = self._started.pop()
            try:
                unit.stop()
            except Exception as exc:  # keep going: the remaining units must still be stopped
                self.output.line(unit.name, f"error while stopping: {exc}")

    def request_stop(self) -> None:
        """Ask `run`/`wait` to return (thread- and signal-safe)."""
        self._stop_requested = True

    def wait(self, *, poll_interval: float = 0.2) -> Unit | None:
        """Block until `request_stop` or until a unit exits on its own (which is then returned)."""
        while not self._stop_requested:
            for unit in self._started:
                if unit.exit_code() is not None:
                    return unit
            time.sleep(poll_interval)
        return None

    def run(self) -> int:
        """Start, wait for Ctrl-C/SIGTERM or a dying unit, stop; return a process exit code.

        Returns:
            0 after a signal, 1 if a unit failed to start or exited on its own.
        """

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                self.start()
            except StackError as exc:
                sys.stderr.write(f"wf_stack: {exc}\n")
                return 1
            dead = self.wait()
            if dead is not None:
                sys.stderr.write(f"wf_stack: {dead.name} exited ({dead.exit_code()}); stopping everything\n")
                return 1
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _pump(stream: IO[bytes], name: str, output: PrefixedOutput) -> None:
    for raw in stream:
        output.line(name, raw.decode("utf-8", "replace"))
    stream.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _LogFollower:
    """Follows a log file from an offset (like ``tail -f``) on a daemon thread."""

    def __init__(self, path: Path, offset: int, name: str, output: PrefixedOutput) -> None:
        self._path = path
        self._offset = offset
        self._name = name
        self._output = output
        self._closed = threading.Event()
        self.caught_up = threading.Event()
        """Set once everything written before the follower started has been printed."""
        self._thread = threading.Thread(target=self._run, name=f"wf-stack-{name}-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Print what is left in the file, then stop following."""
        self._closed.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        try:
            self._follow()
        except OSError as exc:  # e.g. the log was removed; losing the tail must not kill the stack
            self._output.line(self._name, f"(stopped following {self._path}: {exc})")
        finally:
            self.caught_up.set()

    def _follow(self) -> None:
        with self._path.open("rb") as fh:
            fh.seek(self._offset)
            pending = b""
            while True:
                # Checked before reading, so that after close() the file is read to its end once more.
                closing = self._closed.is_set()
                chunk = fh.read(64 * 1024)
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._output.line(self._name, line.decode("utf-8", "replace"))
                elif closing:
                    break
                else:
                    self.caught_up.set()
                    self._closed.wait(0.1)
            if pending:
                self._output.line(self._name, pending.decode("utf-8", "replace"))
