"""Small operating-system helpers shared by the servers: ports, process trees, log tails."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from wf_stack.errors import PortInUseError

LOCALHOST = "127.0.0.1"


_HELD_PORTS: dict[int, socket.socket] = {}
"""Ports handed out by :func:`free_port`, each with the socket that keeps holding it."""
_MAX_HELD_PORTS = 64
"""Held sockets beyond this many are closed, oldest first: their servers have long bound them."""


@atexit.register
def _release_ports() -> None:
    while _HELD_PORTS:
        _, sock = _HELD_PORTS.popitem()
        sock.close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on, held for the server to be started.

    The socket that found the port stays bound (``SO_REUSEADDR``, never listening), so no other
    bind without that option and no outgoing connection's ephemeral port can take the port while
    the server process starts (a closed socket allowed it: a CI run once lost a port that way). The
    servers started here set ``SO_REUSEADDR`` themselves (uvicorn, nats-server, Postgres), so they
    bind and listen on the held port, on a restart too. The last 64 ports stay held.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCALHOST, 0))
    port: int = sock.getsockname()[1]
    _HELD_PORTS[port] = sock
    while len(_HELD_PORTS) > _MAX_HELD_PORTS:
        _HELD_PORTS.pop(next(iter(_HELD_PORTS))).close()
    return port


def ensure_port_free(port: int, *, service: str) -> None:
    """Raise `PortInUseError` when something already listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR themselves, so a port in TIME_WAIT is free for them;
        # probing the same way only reports a real listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(port, service=service) from exc
            raise


def die_with_parent(signal_name: str) -> list[str]:
    """A command prefix that sends the process `signal_name` when the process that started it dies.

    Servers run in sessions of their own, so without this a test run killed with SIGKILL (a CI
    timeout, an IDE's stop button) would leave them running forever. It uses the kernel's
    parent-death signal through util-linux ``setpriv --pdeathsig``, which then execs the command
    (no extra process). That signal fires when the *thread* that started the child exits, so it is
    only used from the main thread; elsewhere, and where setpriv is missing, the prefix is empty.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = _setpriv_with_pdeathsig()
    return [setpriv, "--pdeathsig", signal_name, "--"] if setpriv is not None else []


@functools.cache
def _setpriv_with_pdeathsig() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    # --pdeathsig arrived in util-linux 2.33; an older setpriv would refuse to start the server.
    usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, check=False)  # noqa: S603
    return setpriv if "--pdeathsig" in usage.stdout else None


def pid_alive(pid: int) -> bool:
    """Whether `pid` names a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it just is not ours
    stat = _read_stat(pid)
    # Orphans are re-parented to PID 1, which in a container may never reap them.
    return stat is None or stat[0] != "Z"


def process_state(pid: int) -> str | None:
    """The state letter of `pid` (``R``, ``S``, ``T`` stopped, ``Z`` zombie...), None if unknown."""
    stat = _read_stat(pid)
    return None if stat is None else stat[0]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """State letter and parent pid from /proc/<pid>/stat, or None where /proc is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def parent_pid(pid: int) -> int | None:
    """The parent of `pid`, or None if unknown (no /proc, or the process is gone)."""
    stat = _read_stat(pid)
    if stat is not None:
        return stat[1]
    ps = shutil.which("ps")
    if ps is None:
        return None
    out = subprocess.run([ps, "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    ppid = out.stdout.strip()
    return int(ppid) if ppid.isdigit() else None


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, parents before children."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if entry.name.isdigit():
                stat = _read_stat(int(entry.name))
                if stat is not None:
                    children.setdefault(stat[1], []).append(int(entry.name))
    elif (ps := shutil.which("ps")) is not None:  # macOS and friends
        out = subprocess.run([ps, "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        for line in out.stdout.splitlines():
            child, parent = (int(part) for part in line.split())
            children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def send_signal(pids: Iterable[int], sig: signal.Signals) -> None:
    """Send `sig` to each pid, ignoring the ones that are already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], *, timeout: float) -> bool:
    """Wait until none of `pids` is alive; return False if some still are after `timeout` seconds."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [pid for pid in pending if pid_alive(pid)]
        if not pending:
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def log_tail(path: Path, *, lines: int = 30) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
