"""PullStream against a real nats-server: messages as they arrive, credits, expiry, a consumer gone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from wf_worker.pull import ConsumerGoneError, PullStream


@pytest.fixture
async def stream(nats_url: str) -> AsyncIterator[tuple[Any, str, str]]:
    """A connection, a fresh stream on ``pull.<id>.>`` and a durable consumer on it."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"PULL_{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"pull.{name}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT, ack_wait=2))
    yield nc, name, f"pull.{name}.x"
    await js.delete_stream(name)
    await nc.close()


async def _collect(pull: PullStream, count: int, *, within: float) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await pull.next_batch(count - len(got), timeout=0.2))
    return got


async def test_a_burst_smaller_than_the_batch_is_handed_out_at_once(stream: tuple[Any, str, str]) -> None:
    nc, name, subject = stream
    pull = await PullStream(nc, stream=name, durable="d", batch=64, expires=30).start()
    js = nc.jetstream()
    await asyncio.sleep(0.1)  # the request is waiting on the server
    started = time.monotonic()
    for i in range(5):
        await js.publish(subject, b"%d" % i)
    got = await _collect(pull, 5, within=5)
    # nats-py's fetch(64) would hold these 5 until its 30 s request expired
    assert [m.data for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert time.monotonic() - started < 1.0
    for message in got:
        await message.ack()
    await pull.close()


async def test_more_than_a_batch_comes_in_several_requests(stream: tuple[Any, str, str]) -> None:
    nc, name, subject = stream
    js = nc.jetstream()
    for i in range(50):
        await js.publish(subject, b"%d" % i)
    pull = await PullStream(nc, stream=name, durable="d", batch=8, expires=30).start()
    got = await _collect(pull, 50, within=10)
    assert sorted(int(m.data) for m in got) == list(range(50))
    assert pull.buffered <= 8  # never more than a batch asked for or held
    for message in got:
        await message.ack()
    await pull.close()


async def test_after_requests_expire_new_messages_still_arrive(stream: tuple[Any, str, str]) -> None:
    nc, name, subject = stream
    pull = await PullStream(nc, stream=name, durable="d", batch=4, expires=0.6, heartbeat=0.2).start()
    assert await pull.next_batch(4, timeout=1.5) == []  # the request expired meanwhile (a 408)
    await nc.jetstream().publish(subject, b"late")
    got = await _collect(pull, 1, within=3)
    assert [m.data for m in got] == [b"late"]
    await got[0].ack()
    await pull.close()


async def test_an_expired_request_is_renewed_at_once_not_when_the_wait_ends(
    stream: tuple[Any, str, str],
) -> None:
    nc, name, subject = stream
    pull = await PullStream(nc, stream=name, durable="d", batch=4, expires=0.6, heartbeat=0.2).start()
    waiting = asyncio.ensure_future(pull.next_batch(4, timeout=10))
    await asyncio.sleep(1.2)  # the request expired (a 408) while next_batch waits
    published = time.monotonic()
    await nc.jetstream().publish(subject, b"after expiry")
    got = await asyncio.wait_for(waiting, 10)
    assert [m.data for m in got] == [b"after expiry"]
    assert time.monotonic() - published < 0.5  # not at the end of the 10 s wait
    await got[0].ack()
    await pull.close()


async def test_a_message_not_handed_out_comes_back_after_close(stream: tuple[Any, str, str]) -> None:
    nc, name, subject = stream
    js = nc.jetstream()
    await js.publish(subject, b"one")
    first = await PullStream(nc, stream=name, durable="d", batch=4).start()
    await asyncio.sleep(0.3)
    assert first.buffered == 1  # arrived, never handed out, never acked
    await first.close()
    second = await PullStream(nc, stream=name, durable="d", batch=4).start()
    got = await _collect(second, 1, within=5)  # redelivered after the 2 s ack wait
    assert [m.data for m in got] == [b"one"]
    assert got[0].metadata.num_delivered == 2
    await got[0].ack()
    await second.close()


async def test_a_deleted_consumer_raises(stream: tuple[Any, str, str]) -> None:
    nc, name, _ = stream
    # The server drops a deleted consumer's waiting requests silently: the missed heartbeats tell,
    # and the request sent again is refused.
    pull = await PullStream(nc, stream=name, durable="d", batch=4, expires=30, heartbeat=0.2).start()
    await nc.jetstream().delete_consumer(name, "d")

    async def pull_until_refused() -> None:
        for _ in range(20):
            await pull.next_batch(4, timeout=0.2)

    with pytest.raises(ConsumerGoneError):
        await pull_until_refused()
    await pull.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch"):
        PullStream(object(), stream="S", durable="d", batch=0)
    with pytest.raises(ValueError, match="heartbeat"):
        PullStream(object(), stream="S", durable="d", expires=1, heartbeat=1)
