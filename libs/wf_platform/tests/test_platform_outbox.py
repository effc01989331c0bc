"""The outbox relay: order per key across replicas, failures retried, lag measured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.bus import InMemoryEventBus, PublishedMessage
from wf_platform.db import TenantDatabase, create_engine, ensure_database
from wf_platform.metrics import PlatformMetrics
from wf_platform.outbox import OutboxRelay
from wf_platform.plugin import migrate_platform_schema
from wf_platform.tenancy import TenantId


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    await ensure_database(fresh_database)
    engine = create_engine(fresh_database, pool_size=6)
    await migrate_platform_schema(engine)
    yield engine
    await engine.dispose()


async def _write(engine: AsyncEngine, tenant: str, key: str, n: int, *, woke: list[int]) -> None:
    # The outbox table is shared; no tenant schema is needed to queue messages.
    db = TenantDatabase(engine, TenantId(tenant), on_outbox_commit=lambda: woke.append(1))
    for i in range(n):
        async with db.transaction() as uow:
            await uow.publish(
                f"wf.events.{tenant}.k", f"{key}:{i}".encode(), msg_id=f"{tenant}:{key}:{i}", ordering_key=key
            )


class _SlowBus(InMemoryEventBus):
    """Yields on every publish so that two relays really interleave."""

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        await asyncio.sleep(0)
        await super().publish(subject, payload, msg_id=msg_id, headers=headers)


async def test_three_relays_keep_order_per_key_and_publish_each_once(engine: AsyncEngine) -> None:
    woke: list[int] = []
    for key in ["a", "b", "c", "d"]:
        await _write(engine, "acme", key, 30, woke=woke)
    assert len(woke) == 120  # every commit with outbox rows wakes the relay
    bus = _SlowBus()
    relays = [OutboxRelay(engine, bus, batch_size=7) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        for _ in range(200):
            await relay.drain()
            if (await relay.refresh_lag())[0] == 0:
                return
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(r) for r in relays))
    messages: list[PublishedMessage] = bus.messages
    assert len(messages) == 120
    for key in ["a", "b", "c", "d"]:
        sequence = [
            int(m.payload.decode().split(":")[1])
            for m in messages
            if m.payload.startswith(f"{key}:".encode())
        ]
        assert sequence == list(range(30)), key


async def test_failed_publish_is_retried_and_blocks_only_its_key(engine: AsyncEngine) -> None:
    woke: list[int] = []
    await _write(engine, "acme", "x", 2, woke=woke)
    await _write(engine, "acme", "y", 1, woke=woke)
    bus = InMemoryEventBus()
    bus.fail_next = 1  # the first row (x:0) fails
    metrics = PlatformMetrics("test")
    relay = OutboxRelay(engine, bus, metrics=metrics)
    published, taken = await relay.run_once()
    assert (published, taken) == (1, 3)  # y:0 went; x:1 waited behind x:0
    assert [m.payload for m in bus.messages] == [b"y:0"]
    pending, lag = await relay.refresh_lag()
    assert pending == 2
    assert lag >= 0
    assert (await relay.run_once())[0] == 2
    assert [m.payload for m in bus.messages] == [b"y:0", b"x:0", b"x:1"]
    assert await relay.refresh_lag() == (0, 0.0)
    rendered = metrics.render().decode()
    assert "wf_outbox_publish_errors_total 1.0" in rendered
    assert "wf_outbox_pending_messages 0.0" in rendered


async def test_background_relay_is_woken_after_commit(engine: AsyncEngine) -> None:
    bus = InMemoryEventBus()
    relay = OutboxRelay(engine, bus, poll_seconds=3600)  # the timer will not fire during this test
    relay.start()
    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.wake)
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"now", msg_id="m1", ordering_key="k")
        for _ in range(100):
            if bus.messages:
                break
            await asyncio.sleep(0.02)
        assert [m.payload for m in bus.messages] == [b"now"]
    finally:
        await relay.stop()


async def test_rolled_back_transaction_sends_nothing(engine: AsyncEngine) -> None:
    db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=lambda: None)

    async def fail() -> None:
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"never", msg_id="m-never", ordering_key="k")
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        await fail()
    bus = InMemoryEventBus()
    assert await OutboxRelay(engine, bus).run_once() == (0, 0)
