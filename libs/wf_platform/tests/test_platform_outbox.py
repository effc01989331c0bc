"""The outbox relay: order per key across replicas, failures retried, lag measured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.bus import InMemoryEventBus, PublishedMessage
from wf_platform.db import CommittedOutbox, TenantDatabase, create_engine, ensure_database
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
    db = TenantDatabase(engine, TenantId(tenant), on_outbox_commit=lambda _: woke.append(1))
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


async def _eventually(check: Callable[[], Awaitable[bool]], *, tries: int = 150) -> None:
    for _ in range(tries):  # bounded: 3 s
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def _unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT count(*) FROM wf.outbox WHERE sent_at IS NULL"))
        return int(result.scalar_one())


async def test_commit_is_published_at_once_and_marked_sent_without_a_pass(engine: AsyncEngine) -> None:
    bus = InMemoryEventBus()
    relay = OutboxRelay(engine, bus, poll_seconds=3600)  # the timer will not fire during this test
    relay.start()
    passes: list[int] = []
    original = relay.run_once

    async def counted() -> tuple[int, int]:
        passes.append(1)
        return await original()

    relay.run_once = counted  # type: ignore[method-assign]
    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.committed)
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"now", msg_id="m1", ordering_key="k")
            await uow.publish("wf.events.acme.k", b"then", msg_id="m2", ordering_key="k")

        async def sent() -> bool:
            return await _unsent(engine) == 0

        await _eventually(sent)
        assert [m.payload for m in bus.messages] == [b"now", b"then"]
        assert passes == []  # no pass: published from memory, marked sent in one statement
    finally:
        await relay.stop()


class _UnevenBus(InMemoryEventBus):
    """Every third publish is slow, so a later commit's publish would overtake an earlier one."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.calls += 1
        await asyncio.sleep(0.02 if self.calls % 3 == 1 else 0)
        await super().publish(subject, payload, msg_id=msg_id, headers=headers)


async def test_commits_of_one_key_on_the_fast_path_stay_in_order(engine: AsyncEngine) -> None:
    bus = _UnevenBus()
    relay = OutboxRelay(engine, bus, poll_seconds=3600)
    relay.start()
    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.committed)

        async def writer(key: str) -> None:
            for i in range(20):
                async with db.transaction() as uow:
                    await uow.publish(
                        "wf.events.acme.k", f"{key}:{i}".encode(), msg_id=f"{key}:{i}", ordering_key=key
                    )

        await asyncio.gather(writer("a"), writer("b"))

        async def done() -> bool:
            return len(bus.messages) == 40 and await _unsent(engine) == 0

        await _eventually(done)
        for key in ["a", "b"]:
            sequence = [m.payload.decode() for m in bus.messages if m.payload.startswith(f"{key}:".encode())]
            assert sequence == [f"{key}:{i}" for i in range(20)]
    finally:
        await relay.stop()


async def test_a_row_the_relay_does_not_hold_keeps_later_commits_of_its_key_behind_it(
    engine: AsyncEngine,
) -> None:
    """Another replica's unsent row (here: written without telling this relay) is older: the new
    commit of the same key is left to a pass, which publishes both in order."""
    elsewhere = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=lambda _: None)
    async with elsewhere.transaction() as uow:
        await uow.publish("wf.events.acme.k", b"x:0", msg_id="x0", ordering_key="x")
    bus = InMemoryEventBus()
    relay = OutboxRelay(engine, bus, poll_seconds=3600)
    relay.start()
    seen: list[CommittedOutbox] = []

    def committed(outbox: CommittedOutbox) -> None:
        seen.append(outbox)
        relay.committed(outbox)

    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=committed)
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"x:1", msg_id="x1", ordering_key="x")
            await uow.publish("wf.events.acme.k", b"y:0", msg_id="y0", ordering_key="y")

        async def done() -> bool:
            return len(bus.messages) == 3 and await _unsent(engine) == 0

        await _eventually(done)
        assert len(seen[0].older) == 1  # x:0, unsent when x:1 was written
        payloads = [m.payload for m in bus.messages]
        assert payloads.index(b"x:0") < payloads.index(b"x:1")
    finally:
        await relay.stop()


async def test_failed_fast_publish_leaves_its_key_to_a_pass_in_order(engine: AsyncEngine) -> None:
    bus = _SlowBus()
    bus.fail_next = 1  # x:0 fails on the fast path
    metrics = PlatformMetrics("test")
    relay = OutboxRelay(engine, bus, metrics=metrics, poll_seconds=3600)
    relay.start()
    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.committed)
        for i in range(3):
            async with db.transaction() as uow:
                await uow.publish("wf.events.acme.k", f"x:{i}".encode(), msg_id=f"x{i}", ordering_key="x")

        async def done() -> bool:
            return len(bus.messages) == 3 and await _unsent(engine) == 0

        await _eventually(done)
        assert [m.payload for m in bus.messages] == [b"x:0", b"x:1", b"x:2"]
        assert "wf_outbox_publish_errors_total 1.0" in metrics.render().decode()
    finally:
        await relay.stop()


async def test_a_relay_that_is_not_running_publishes_nothing_after_commit(engine: AsyncEngine) -> None:
    bus = InMemoryEventBus()
    relay = OutboxRelay(engine, bus)  # never started: ORCHESTRATOR_OUTBOX_RELAY=false
    db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.committed)
    async with db.transaction() as uow:
        await uow.publish("wf.events.acme.k", b"later", msg_id="l1", ordering_key="k")
    await asyncio.sleep(0.05)
    assert bus.messages == []
    assert await relay.run_once() == (1, 1)
    assert [m.payload for m in bus.messages] == [b"later"]


async def test_rolled_back_transaction_sends_nothing(engine: AsyncEngine) -> None:
    db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=lambda _: None)

    async def fail() -> None:
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"never", msg_id="m-never", ordering_key="k")
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError):
        await fail()
    bus = InMemoryEventBus()
    assert await OutboxRelay(engine, bus).run_once() == (0, 0)


async def test_after_commit_callbacks_run_only_once_the_unit_committed(engine: AsyncEngine) -> None:
    db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=lambda _: None)
    ran: list[str] = []
    async with db.transaction() as uow:
        uow.after_commit(lambda: ran.append("committed"))
        assert ran == []  # not before the commit
    assert ran == ["committed"]

    async def rolled_back() -> None:
        async with db.transaction() as uow:
            uow.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError("business rule failed")

    async def failed_statement() -> None:
        async with db.single_statement() as uow:
            uow.after_commit(lambda: ran.append("statement failed"))
            await uow.conn.execute(sa.text("SELECT 1 / 0"))

    with pytest.raises(RuntimeError):
        await rolled_back()
    with pytest.raises(sa.exc.DBAPIError):
        await failed_statement()
    async with db.single_statement() as uow:
        uow.after_commit(lambda: ran.append("statement"))
        await uow.conn.execute(sa.text("SELECT 1"))
    assert ran == ["committed", "statement"]


async def _sent_payloads(engine: AsyncEngine) -> set[bytes]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT payload FROM wf.outbox WHERE sent_at IS NOT NULL"))
        return {bytes(row[0]) for row in result}


@dataclass
class _Lending:
    """A started relay whose published rows wait for statements to mark them, and a tenant
    database whose units of work carry those marks."""

    bus: InMemoryEventBus
    metrics: PlatformMetrics
    relay: OutboxRelay
    db: TenantDatabase

    def marked(self) -> tuple[float, float]:
        """Rows marked so far: (by a unit's statement, by the relay's own)."""

        def count(by: str) -> float:
            return (
                self.metrics.registry.get_sample_value("wf_outbox_marked_messages_total", {"by": by}) or 0.0
            )

        return count("write"), count("relay")

    async def publish(self, payload: bytes, /, *, key: str = "k") -> None:
        """Commit one message and wait until the relay published it (bounded)."""
        before = len(self.bus.messages)
        async with self.db.transaction() as uow:
            await uow.publish("wf.events.acme.k", payload, msg_id=payload.decode(), ordering_key=key)

        async def published() -> bool:
            return len(self.bus.messages) > before

        await _eventually(published)


@asynccontextmanager
async def _lending(engine: AsyncEngine, *, mark_delay: float) -> AsyncIterator[_Lending]:
    """The relay is stopped on exit (which marks what is left at once)."""
    bus = InMemoryEventBus()
    metrics = PlatformMetrics("test")
    relay = OutboxRelay(engine, bus, metrics=metrics, poll_seconds=3600, mark_delay_seconds=mark_delay)
    relay.start()
    try:
        yield _Lending(
            bus,
            metrics,
            relay,
            TenantDatabase(engine, TenantId("acme"), on_outbox_commit=relay.committed, marks=relay),
        )
    finally:
        await relay.stop()


async def test_published_rows_are_marked_by_the_next_outbox_statement(engine: AsyncEngine) -> None:
    """The relay lends what it published to the next statement that writes the outbox, in a
    transaction or alone: no statement of its own while the service writes (the delay is an hour)."""
    async with _lending(engine, mark_delay=3600) as lending:
        await lending.publish(b"first")
        assert await _unsent(engine) == 1  # published, not yet marked
        await lending.publish(b"second")
        assert await _sent_payloads(engine) == {b"first"}  # marked by the second commit's statement
        async with lending.db.single_statement() as uow:
            await uow.publish("wf.events.acme.other", b"third", msg_id="third", ordering_key="other")
            await uow.flush()
        assert await _sent_payloads(engine) == {b"first", b"second"}
        assert lending.marked() == (2, 0)
    # Stopping marks what is left at once, with the relay's own statement.
    assert await _unsent(engine) == 0
    assert lending.marked() == (2, 1)


async def test_marks_of_a_rolled_back_unit_go_back_to_the_relay(engine: AsyncEngine) -> None:
    async with _lending(engine, mark_delay=3600) as lending:
        await lending.publish(b"first")

        async def rolled_back() -> None:
            async with lending.db.transaction() as uow:
                await uow.publish("wf.events.acme.k", b"never", msg_id="never", ordering_key="k")
                await uow.flush()  # this statement marked "first" ...
                raise RuntimeError("business rule failed")  # ... and the mark rolls back with it

        with pytest.raises(RuntimeError):
            await rolled_back()
        assert await _sent_payloads(engine) == set()
        lent = lending.relay.lend()  # back with the relay: the next statement may take it again
        assert len(lent) == 1
        assert await lending.relay.run_once() == (0, 0)  # a pass leaves a lent row alone (no republish)
        lending.relay.settle(lent, written=False)
    assert await _sent_payloads(engine) == {b"first"}  # marked by the relay as it stopped
    assert [m.payload for m in lending.bus.messages] == [b"first"]
    assert lending.marked() == (0, 1)


async def test_the_relay_marks_rows_no_statement_took_after_its_delay(engine: AsyncEngine) -> None:
    async with _lending(engine, mark_delay=0.05) as lending:
        await lending.publish(b"alone")

        async def sent() -> bool:
            return await _unsent(engine) == 0

        await _eventually(sent)
        assert lending.marked() == (0, 1)


async def test_a_statement_does_not_wait_for_a_lent_row_another_transaction_holds(
    engine: AsyncEngine,
) -> None:
    """Another replica's pass may hold a row this relay published: the business statement skips it
    (never waits on the outbox) and the row goes back to the relay."""
    async with _lending(engine, mark_delay=3600) as lending:
        await lending.publish(b"held")
        async with engine.connect() as other, other.begin():
            await other.execute(sa.text("SELECT id FROM wf.outbox WHERE msg_id = 'held' FOR UPDATE"))
            async with asyncio.timeout(5):  # would wait for the lock forever without SKIP LOCKED
                async with lending.db.transaction() as uow:
                    await uow.publish("wf.events.acme.k", b"next", msg_id="next", ordering_key="k")
        assert await _sent_payloads(engine) == set()
        assert lending.marked() == (0, 0)
        lent = lending.relay.lend()
        assert len(lent) >= 1  # "held" is back with the relay (and "next" once published)
        lending.relay.settle(lent, written=False)
    assert await _unsent(engine) == 0  # the relay marked both as it stopped


class _HeldBus(InMemoryEventBus):
    """Counts every publish call and holds them until released (a slow JetStream ack)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(msg_id)
        await self.release.wait()
        await super().publish(subject, payload, msg_id=msg_id, headers=headers)


async def test_a_commit_reported_while_a_pass_publishes_its_row_is_not_published_again(
    engine: AsyncEngine,
) -> None:
    bus = _HeldBus()
    relay = OutboxRelay(engine, bus, poll_seconds=3600)
    relay.start()
    reported: list[CommittedOutbox] = []
    try:
        db = TenantDatabase(engine, TenantId("acme"), on_outbox_commit=reported.append)
        async with db.transaction() as uow:
            await uow.publish("wf.events.acme.k", b"once", msg_id="m1", ordering_key="k")
        relay.wake()  # a pass takes the row and publishes it (held)

        async def pass_publishing() -> bool:
            return bus.calls == ["m1"]

        await _eventually(pass_publishing)
        relay.committed(reported[0])  # the commit reaches the fast path late, while the pass holds it
        bus.release.set()

        async def sent() -> bool:
            return await _unsent(engine) == 0

        await _eventually(sent)
        await asyncio.sleep(0.1)
        assert bus.calls == ["m1"]  # one path published it
    finally:
        await relay.stop()
