"""``python -m wf_stack``: run a command against a throwaway stack, or run the dev stack.

``run [--fsync] -- CMD ARGS...``
    Starts a throwaway Postgres and nats-server on free ports, runs CMD with ``WF_TEST_PG_URL``,
    ``WF_TEST_NATS_URL`` and ``WF_TEST_NATS_MONITOR_URL`` set, then stops both servers and removes
    their directories, whatever happens. Exits with CMD's exit code (128+N if CMD died of signal N).

    Signals: SIGTERM and SIGHUP are forwarded to CMD; so is SIGINT, except when we run in the
    terminal's foreground process group, where the terminal has already delivered Ctrl-C to CMD
    (it shares our process group) and a forwarded copy would interrupt its clean-up. A second
    signal, or CMD still running 30 s after the first, SIGKILLs CMD. The servers run in sessions
    of their own, so only we stop them, after CMD has exited. Should ``run`` itself be SIGKILLed,
    the kernel signals CMD and both servers (Linux parent-death signal, see `_os.die_with_parent`).

``dev [--dir .dev] [--fsync]``
    Runs `wf_stack.dev.build_dev_stack` until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from wf_stack._os import die_with_parent
from wf_stack.dev import build_dev_stack
from wf_stack.errors import StackError
from wf_stack.nats import NatsServer
from wf_stack.postgres import PostgresServer

__all__ = ["main", "run_with_stack"]

ENV_PG_URL = "WF_TEST_PG_URL"
ENV_NATS_URL = "WF_TEST_NATS_URL"
ENV_NATS_MONITOR_URL = "WF_TEST_NATS_MONITOR_URL"

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_KILL_GRACE_SECONDS = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: ``sys.argv[1:]``), run the sub-command, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m wf_stack", description="The local stack, as code.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run a command against a throwaway Postgres + nats-server",
        description="Start a throwaway Postgres and nats-server, run CMD with WF_TEST_* set, clean up.",
    )
    run.add_argument("--fsync", action="store_true", help="run Postgres with fsync=on (benchmarks)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command to run")

    dev = commands.add_parser(
        "dev",
        help="run Postgres on 5433 and NATS on 4222/8222 until Ctrl-C",
        description="Run the development stack until Ctrl-C or SIGTERM; data is kept in DIR.",
    )
    dev.add_argument("--dir", type=Path, default=Path(".dev"), help="state directory (default: .dev)")
    dev.add_argument("--fsync", action="store_true", help="run Postgres with fsync=on")

    args = parser.parse_args(argv)
    if args.command == "run":
        cmd: list[str] = list(args.cmd)
        if cmd[:1] == ["--"]:
            cmd = cmd[1:]
        if not cmd:
            parser.error("run: give the command after --, e.g. `python -m wf_stack run -- pytest`")
        return run_with_stack(cmd, fsync=args.fsync)
    directory: Path = args.dir
    return build_dev_stack(directory, fsync=args.fsync).run()


class _Runner:
    """Signal-aware state of one `run_with_stack` call."""

    def __init__(self) -> None:
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.received: list[int] = []

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record and forward here: raising from a handler could strike between a server's
        # start and its registration for clean-up, leaking it.
        self.received.append(signum)
        child = self.child
        if self.stopping or child is None or child.poll() is not None:
            return
        if len(self.received) > 1:
            child.kill()
            return
        if signum != signal.SIGINT or not _terminal_delivers_sigint():
            child.send_signal(signum)
        timer = threading.Timer(_KILL_GRACE_SECONDS, _kill_if_running, args=(child,))
        timer.daemon = True
        timer.start()


def run_with_stack(cmd: Sequence[str], *, fsync: bool = False) -> int:
    """Run `cmd` against a throwaway Postgres and nats-server; always stop them and clean up.

    Args:
        cmd: The command and its arguments.
        fsync: Run Postgres with ``fsync=on``.

    Returns:
        `cmd`'s exit code; 128+N if it died of signal N or we were stopped by signal N before it
        started; 127 if it could not be executed; 1 if the stack did not start.
    """
    if shutil.which(cmd[0]) is None:  # fail before paying for two servers
        _say(f"cannot run {cmd[0]!r}: command not found")
        return 127
    runner = _Runner()
    previous = {sig: signal.signal(sig, runner.on_signal) for sig in _FORWARDED}
    servers: list[PostgresServer | NatsServer] = []
    try:
        try:
            servers.append(PostgresServer.start(fsync=fsync))
            if not runner.received:
                servers.append(NatsServer.start())
        except StackError as exc:
            _say(str(exc))
            return 1
        if runner.received:
            return 128 + runner.received[0]
        pg, nats = servers
        assert isinstance(pg, PostgresServer)
        assert isinstance(nats, NatsServer)
        _say(f"{ENV_PG_URL}={pg.url} (pid {pg.pid}, data {pg.data_dir})")
        _say(
            f"{ENV_NATS_URL}={nats.url} {ENV_NATS_MONITOR_URL}={nats.monitor_url} "
            f"(pid {nats.pid}, store {nats.store_dir})"
        )
        env = {
            **os.environ,
            ENV_PG_URL: pg.url,
            ENV_NATS_URL: nats.url,
            ENV_NATS_MONITOR_URL: nats.monitor_url,
        }
        try:
            # Our process group: a Ctrl-C in the terminal reaches CMD directly, as if run alone. If we
            # are SIGKILLed, CMD gets SIGTERM from the kernel (and the servers their own signals).
            runner.child = subprocess.Popen([*die_with_parent("TERM"), *cmd], env=env)  # noqa: S603 - running CMD is the point
        except OSError as exc:
            _say(f"cannot run {cmd[0]!r}: {exc}")
            return 127
        code = runner.child.wait()
        return 128 - code if code < 0 else code
    finally:
        runner.stopping = True
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # keep going: the other server must still be stopped
                _say(f"error while stopping {server!r}: {exc}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(message: str) -> None:
    # stderr: stdout belongs to CMD (a test report, JSON, ...).
    sys.stderr.write(f"wf_stack: {message}\n")
    sys.stderr.flush()


def _terminal_delivers_sigint() -> bool:
    """Whether we are in the foreground of a controlling terminal (so Ctrl-C hit CMD too)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _kill_if_running(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.kill()
