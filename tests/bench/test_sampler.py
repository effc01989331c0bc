"""The bench's process sampler (``bench/common.py``): besides each process group's CPU it reports the
whole machine's busy cores over a phase and how long Postgres autovacuum ran in it. On two shared
cores a phase's latency depends on how free the machine was; these numbers are how a run shows it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import namedtuple
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def common(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("common")


CpuTimes = namedtuple(
    "CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice"
)  # the fields of psutil.cpu_times() on Linux


def test_busy_cores_leave_out_idle_io_wait_steal_and_the_guest_time_user_already_holds(
    common: ModuleType,
) -> None:
    before = CpuTimes(100, 5, 50, 1000, 10, 1, 2, 3, 7, 0)
    # Over 10 s: user 6 (of which guest 1), nice 0.5, system 3, irq 0.25, softirq 0.25: 10 busy
    # seconds; idle 8, iowait 1 and steal 1 are not busy.
    after = CpuTimes(106, 5.5, 53, 1008, 11, 1.25, 2.25, 4, 8, 0)
    usage = common._machine_usage(before, after, 10.0)
    assert usage == {"busy_cores": 1.0, "steal_cores": 0.1}


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[bytes]]:
    # A child that keeps one core busy until killed.
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_busy_core_shows_in_the_machine_and_in_its_group(
    common: ModuleType, spinner: subprocess.Popen[bytes]
) -> None:
    sampler = common.ProcessSampler({"spinner": (spinner.pid, False)}, interval=0.2).start()
    time.sleep(1.5)
    processes = sampler.stop()
    assert processes["spinner"]["cpu_cores"] > 0.5
    # The whole machine was at least as busy as the one process in it.
    assert sampler.machine["busy_cores"] >= processes["spinner"]["cpu_cores"] - 0.05
    assert sampler.machine["autovacuum_s"] == 0.0


def test_autovacuum_time_counts_the_samples_where_a_worker_ran_among_the_children(
    common: ModuleType,
) -> None:
    # Postgres titles its processes in their command line; a child titled like an autovacuum
    # worker stands in for one (exec -a sets argv[0]).
    # A backend that is not autovacuum runs throughout and must not count.
    backend = subprocess.Popen(["bash", "-c", 'exec -a "postgres: bench bench 127.0.0.1 idle" sleep 30'])
    worker = subprocess.Popen(["bash", "-c", 'exec -a "postgres: autovacuum worker bench" sleep 30'])
    try:
        sampler = common.ProcessSampler({"postgres": (os.getpid(), True)}, interval=0.1).start()
        time.sleep(0.55)
        worker.kill()
        worker.wait()
        time.sleep(0.5)
        sampler.stop()
    finally:
        for child in (worker, backend):
            child.kill()
            child.wait()
    # About 0.5 s of 1.05 s (to the sampling interval, on a loaded machine).
    assert 0.2 <= sampler.machine["autovacuum_s"] <= 0.8
