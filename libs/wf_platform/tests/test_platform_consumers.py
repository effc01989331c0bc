"""PullConsumer's recovery: a failed pull releases its subscription before binding again."""

from __future__ import annotations

import asyncio
from typing import Any

from wf_platform.consumers import PullConsumer


class _Subscription:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.unsubscribed = False

    async def next_batch(self, max_messages: int, /, *, timeout: float) -> list[Any]:
        if self.fail:
            raise RuntimeError("connection lost")
        await asyncio.sleep(0.01)
        return []

    async def close(self) -> None:
        self.unsubscribed = True


class _FakeClient:
    def jetstream(self) -> object:
        return object()


async def _ignore(_message: Any) -> None:
    return None


def _consumer(monkeypatch: Any, subscribe: Any, **options: Any) -> PullConsumer:
    """A consumer on a fake connection whose ``subscribe`` gives the test's subscriptions."""
    consumer = PullConsumer(
        _FakeClient(),  # type: ignore[arg-type]
        stream="S",
        durable="d",
        filter_subjects=["s.>"],
        handle=_ignore,
        batch=10,
        ack_wait=5.0,
        **options,
    )
    monkeypatch.setattr(consumer, "subscribe", subscribe)
    return consumer


async def test_a_failed_pull_unsubscribes_before_binding_again(monkeypatch: Any) -> None:
    import wf_platform.consumers as consumers

    real_sleep = asyncio.sleep

    async def no_pause(_seconds: float) -> None:  # the one-second back-off, and every other sleep
        await real_sleep(0)

    monkeypatch.setattr(consumers.asyncio, "sleep", no_pause)
    made: list[_Subscription] = []

    async def subscribe() -> _Subscription:
        made.append(_Subscription(fail=len(made) == 0))
        return made[-1]

    consumer = _consumer(monkeypatch, subscribe)
    consumer.start()
    for _ in range(200):
        if len(made) >= 2:
            break
        await asyncio.sleep(0.01)
    await consumer.stop()
    assert len(made) >= 2
    assert made[0].unsubscribed  # the failed one was released
    assert made[1].unsubscribed  # stop() releases the current one


class _Batches:
    """Hands out numbered one-message batches, as many as asked for."""

    def __init__(self) -> None:
        self.handed = 0

    async def next_batch(self, max_messages: int, /, *, timeout: float) -> list[Any]:
        self.handed += 1
        return [self.handed]

    async def close(self) -> None:
        return None


async def _handled_while_first_waits(monkeypatch: Any, *, pipeline: int) -> list[int]:
    """Batches handled (started) while the first one waits, e.g. on its commit."""
    batches = _Batches()
    first_may_finish = asyncio.Event()
    started: list[int] = []

    async def subscribe() -> _Batches:
        return batches

    async def handle_batch(messages: list[Any]) -> None:
        started.append(messages[0])
        if messages[0] == 1:
            await first_may_finish.wait()
        else:
            await asyncio.sleep(3600)  # the others wait too: the pipeline stays full

    consumer = _consumer(monkeypatch, subscribe, handle_batch=handle_batch, pipeline=pipeline)
    consumer.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.005)
        return list(started)
    finally:
        first_may_finish.set()
        await consumer.stop()


async def test_batches_are_pipelined_up_to_the_limit(monkeypatch: Any) -> None:
    assert await _handled_while_first_waits(monkeypatch, pipeline=1) == [1]
    assert await _handled_while_first_waits(monkeypatch, pipeline=3) == [1, 2, 3]
