"""The process supervisor behind `python -m wf_stack dev`."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from wf_stack import NatsServer, PortInUseError, free_port
from wf_stack.dev import build_dev_stack
from wf_stack.supervisor import CommandUnit, DevStack, ServerUnit

SAY_HELLO_THEN_WAIT = """
import signal, sys, time
name = sys.argv[1]
def bye(*_):
    print("bye from", name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("hello from", name, flush=True)
time.sleep(60)
"""


def sleeper(name: str) -> CommandUnit:
    return CommandUnit(name, [sys.executable, "-c", SAY_HELLO_THEN_WAIT, name], describe=f"the {name} unit")


def wait_for(condition: object, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_run_prefixes_output_and_a_signal_stops_units_in_reverse_order() -> None:
    out = io.StringIO()
    stack = DevStack(output=out)
    first, second = stack.add(sleeper("first")), stack.add(sleeper("longer-name"))

    def terminate_when_both_said_hello() -> None:
        wait_for(lambda: out.getvalue().count("hello from") == 2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_both_said_hello, daemon=True).start()
    assert stack.run() == 0

    lines = out.getvalue().splitlines()
    assert "first       | ready: the first unit" in lines
    assert "first       | hello from first" in lines
    assert "longer-name | hello from longer-name" in lines
    assert lines.index("longer-name | bye from longer-name") < lines.index("first       | bye from first")
    assert (first.exit_code(), second.exit_code()) == (0, 0)


def test_wait_returns_the_unit_that_exited_on_its_own() -> None:
    stack = DevStack(output=io.StringIO())
    keeps_running = stack.add(sleeper("keeps-running"))
    dies = stack.add(CommandUnit("dies", [sys.executable, "-c", "raise SystemExit(4)"]))
    with stack:
        assert stack.wait(poll_interval=0.05) is dies
        assert dies.exit_code() == 4
    assert keeps_running.exit_code() == 0


def test_a_unit_that_fails_to_start_stops_those_started_before_it(taken_port: int) -> None:
    stack = DevStack(output=io.StringIO())
    started = stack.add(sleeper("started"))
    stack.add(ServerUnit("nats", lambda: NatsServer.start(port=taken_port), describe=lambda s: s.url))

    with pytest.raises(PortInUseError):
        stack.start()
    assert started.exit_code() is not None  # stopped (perhaps before it could say hello)


def test_dev_stack_serves_both_servers_and_keeps_their_data(open_tmp_dir: Path) -> None:
    out = io.StringIO()
    ports = {"postgres_port": free_port(), "nats_port": free_port(), "nats_monitor_port": free_port()}
    with build_dev_stack(open_tmp_dir, output=out, services=False, **ports):
        pass

    text = out.getvalue()
    assert f"ready: postgresql://postgres@127.0.0.1:{ports['postgres_port']}/postgres" in text
    assert (
        f"ready: nats://127.0.0.1:{ports['nats_port']} (monitoring http://127.0.0.1:{ports['nats_monitor_port']}"
        in text
    )
    assert "database system is ready to accept connections" in text  # the server's log, followed
    assert (open_tmp_dir / "pg" / "PG_VERSION").is_file()
    assert (open_tmp_dir / "nats" / "jetstream").is_dir()


def test_a_taken_fixed_port_fails_before_anything_starts(taken_port: int) -> None:
    stack = DevStack(output=io.StringIO())
    unit = stack.add(sleeper("never-started"))
    stack.need_port(taken_port, "the registry")

    with pytest.raises(PortInUseError, match=f"port {taken_port} for the registry"):
        stack.start()
    assert unit.exit_code() is None  # not even spawned
