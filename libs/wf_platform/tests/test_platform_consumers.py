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

    async def handle(_message: Any) -> None:
        return None

    consumer = PullConsumer(
        _FakeClient(),  # type: ignore[arg-type]
        stream="S",
        durable="d",
        filter_subjects=["s.>"],
        handle=handle,
        batch=10,
        ack_wait=5.0,
    )
    monkeypatch.setattr(consumer, "subscribe", subscribe)
    consumer.start()
    for _ in range(200):
        if len(made) >= 2:
            break
        await asyncio.sleep(0.01)
    await consumer.stop()
    assert len(made) >= 2
    assert made[0].unsubscribed  # the failed one was released
    assert made[1].unsubscribed  # stop() releases the current one
