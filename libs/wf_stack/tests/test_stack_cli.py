"""`python -m wf_stack run` end to end, as `make test` uses it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from wf_stack._os import pid_alive, wait_gone

REPORT_ENV = """
import json, os, sys
print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("WF_TEST_")}))
sys.exit(int(sys.argv[1]))
"""

SLEEP = """
import os, sys, time
print(os.getpid(), flush=True)
time.sleep(60)
"""


def wf_stack(*args: str) -> list[str]:
    return [sys.executable, "-m", "wf_stack", *args]


def started_servers(stderr: str) -> list[tuple[int, Path]]:
    """(pid, directory) of each server, from the lines that `run` prints on stderr."""
    found = re.findall(r"\(pid (\d+), (?:data|store) (\S+)\)", stderr)
    assert len(found) == 2, stderr
    return [(int(pid), Path(directory)) for pid, directory in found]


def assert_cleaned_up(stderr: str) -> None:
    for pid, directory in started_servers(stderr):
        assert not pid_alive(pid), f"server {pid} is still running"
        assert not directory.exists(), f"{directory} was not removed"


@pytest.mark.parametrize("code", [0, 3, 5])
def test_run_exports_the_urls_propagates_the_exit_code_and_cleans_up(code: int) -> None:
    done = subprocess.run(
        wf_stack("run", "--", sys.executable, "-c", REPORT_ENV, str(code)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == code, done.stderr
    env = json.loads(done.stdout)
    assert env["WF_TEST_PG_URL"].startswith("postgresql://postgres@127.0.0.1:")
    assert env["WF_TEST_PG_URL"].endswith("/postgres")
    assert env["WF_TEST_NATS_URL"].startswith("nats://127.0.0.1:")
    assert env["WF_TEST_NATS_MONITOR_URL"].startswith("http://127.0.0.1:")
    assert f"WF_TEST_PG_URL={env['WF_TEST_PG_URL']}" in done.stderr
    assert f"WF_TEST_NATS_URL={env['WF_TEST_NATS_URL']}" in done.stderr
    assert_cleaned_up(done.stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_reaches_the_command_and_everything_is_cleaned_up(sig: signal.Signals) -> None:
    # A session of its own: no controlling terminal, so SIGINT is forwarded as well.
    proc = subprocess.Popen(
        wf_stack("run", "--", sys.executable, "-c", SLEEP),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())  # the command runs, so both servers are up
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 128 + sig, stderr
    assert not pid_alive(child)
    assert_cleaned_up(stderr)


def test_servers_die_with_a_sigkilled_run_instead_of_leaking() -> None:
    proc = subprocess.Popen(
        wf_stack("run", "--", sys.executable, "-c", SLEEP),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())  # the command runs, so both servers are up
    proc.kill()  # no handler runs: only the kernel's parent-death signal can stop anything
    try:
        _, stderr = proc.communicate(timeout=30)  # returns once the command, holding the pipes, exits
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    servers = started_servers(stderr)
    try:
        assert wait_gone([child, *(pid for pid, _ in servers)], timeout=10)
    finally:
        for _, directory in servers:
            shutil.rmtree(directory, ignore_errors=True)


def test_an_unknown_command_fails_like_a_shell_without_starting_servers() -> None:
    done = subprocess.run(
        wf_stack("run", "--", "wf-stack-no-such-command"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 127
    assert "command not found" in done.stderr
    assert "WF_TEST_PG_URL" not in done.stderr


def test_run_without_a_command_is_a_usage_error() -> None:
    done = subprocess.run(wf_stack("run"), capture_output=True, text=True, timeout=30, check=False)

    assert done.returncode == 2
    assert "give the command after --" in done.stderr
