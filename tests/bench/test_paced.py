"""The bench's one open-loop pacing (``bench.common.paced``), used by the suite's half-load phases,
the floor and the HTTP cost: the starts keep the pace, an in-flight limit holds starts back (and the
slip shows in ``elapsed``), and stragglers past the timeout are cancelled and left out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def common(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("common")


async def test_calls_start_at_the_rate_and_their_results_come_back_in_start_order(common: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    counter = iter(range(1000))

    async def one() -> tuple[int, float]:
        index = next(counter)
        at = loop.time() - began
        await asyncio.sleep(0.05 if index % 2 else 0.0)  # slow ones never delay the next start
        return index, at

    run = await common.paced(one, rate=100, duration=0.5)
    assert run.started == 50
    assert [index for index, _ in run.results] == list(range(50))
    # The 50th start is due at 0.49 s; none is early by more than the timer's slack.
    for index, at in run.results:
        assert at >= index / 100 - 0.005
    assert 0.48 <= run.elapsed < 1.0


async def test_an_in_flight_limit_holds_starts_back_and_the_slip_shows(common: ModuleType) -> None:
    running = 0
    most = 0

    async def one() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.1)
        running -= 1

    run = await common.paced(one, rate=100, duration=0.2, max_in_flight=2)
    assert run.started == 20 and len(run.results) == 20
    assert most == 2
    # Twenty calls of 0.1 s two at a time: the last one could only start after ~0.9 s.
    assert run.elapsed >= 0.85


async def test_stragglers_past_the_timeout_are_cancelled_and_left_out(common: ModuleType) -> None:
    cancelled: list[int] = []
    counter = iter(range(1000))

    async def one() -> int:
        index = next(counter)
        if index == 3:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(index)
                raise
        return index

    run = await asyncio.wait_for(common.paced(one, rate=50, duration=0.2, timeout=0.2), 5)
    assert run.started == 10
    assert run.results == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert cancelled == [3]
