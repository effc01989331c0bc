"""The transactional outbox and its relay.

Decision: one shared outbox table per service database, ``wf.outbox``, with a ``tenant_id`` column,
rather than one per tenant schema. The relay's scan is then a single index range over unsent rows
(partial index ``WHERE sent_at IS NULL``) however many tenants exist; per-tenant outboxes would need one
query per tenant per tick (1,000 tenants, 1,000 queries a second while idle). The business transaction
writes its rows (tenant schema) and its outbox rows (``wf`` schema) in the same database transaction,
so a message exists if and only if the state change committed.

Relay (:class:`OutboxRelay`), in every service process:

- woken right after a commit that wrote outbox rows, and on a timer (``outbox_poll_seconds``) for rows
  written by other replicas or left by a crash;
- takes a batch ``ORDER BY id ... FOR UPDATE SKIP LOCKED`` (several replicas each take other rows);
- publishes rows in id order with their stored ``Nats-Msg-Id`` and ``traceparent``, then marks them
  sent in the same transaction. A crash between publish and commit leaves the rows unsent; the next
  relay republishes them with the same ids and JetStream's duplicate window drops the copies;
- keeps order per ``ordering_key`` (e.g. per instance) across replicas: a relay publishes a key's rows
  only while they are exactly that key's next unsent rows (SKIP LOCKED can hand a batch with a gap
  held by another replica); at the first older or missing row it leaves the key until the next pass.
  A failed publish stops its key for the pass;
- exports ``wf_outbox_pending_messages`` and ``wf_outbox_lag_seconds`` (age of the oldest unsent row),
  and deletes sent rows after ``retention_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.bus import EventBus, PublishError
from wf_platform.db import outbox_table
from wf_platform.metrics import PlatformMetrics

__all__ = ["OutboxRelay"]

logger = logging.getLogger("wf_platform.outbox")


# Built once: SQLAlchemy computes each statement's cache key once, and arrays (not expanding IN
# lists) keep one prepared statement whatever the number of keys or rows.
_TAKE = (
    sa.select(
        outbox_table.c.id,
        outbox_table.c.subject,
        outbox_table.c.payload,
        outbox_table.c.headers,
        outbox_table.c.msg_id,
        outbox_table.c.ordering_key,
    )
    .where(outbox_table.c.sent_at.is_(None))
    .order_by(outbox_table.c.id)
    .limit(sa.bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_PENDING = (
    sa.select(outbox_table.c.ordering_key, outbox_table.c.id)
    .where(
        outbox_table.c.sent_at.is_(None),
        outbox_table.c.ordering_key == sa.func.any(sa.bindparam("keys", type_=pg.ARRAY(sa.Text))),
        outbox_table.c.id <= sa.bindparam("last"),
    )
    .order_by(outbox_table.c.id)
)
_MARK_SENT = (
    outbox_table.update()
    .where(outbox_table.c.id == sa.func.any(sa.bindparam("ids", type_=pg.ARRAY(sa.BigInteger))))
    .values(sent_at=sa.func.now())
)


class OutboxRelay:
    """Publishes committed outbox rows; see the module docstring for the guarantees."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        /,
        *,
        metrics: PlatformMetrics | None = None,
        poll_seconds: float = 1.0,
        batch_size: int = 200,
        retention_seconds: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.retention_seconds = retention_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0

    def wake(self) -> None:
        """Ask for a pass now (called after a commit that wrote outbox rows)."""
        self._wake.set()

    def start(self) -> None:
        """Run the relay loop in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="wf-outbox-relay")

    async def stop(self) -> None:
        """Stop the loop (rows in flight stay unsent and are retried by the next relay)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        failures = 0
        last_tick = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            try:
                await self.drain()
                if time.monotonic() - last_tick < self.poll_seconds:
                    failures = 0
                    continue  # the gauges and the purge once per poll period, not after every commit
                last_tick = time.monotonic()
                self._ticks += 1
                if self._ticks % 60 == 0:
                    await self.purge()
                await self.refresh_lag()
                failures = 0
            except Exception:
                failures += 1
                logger.exception("outbox relay pass failed")
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def drain(self) -> int:
        """Publish batches until a batch comes back short; return how many rows were published."""
        total = 0
        while True:
            published, taken = await self.run_once()
            total += published
            if taken < self.batch_size or published == 0:
                return total

    async def run_once(self) -> tuple[int, int]:
        """One transaction: lock a batch, publish what may go, mark it sent. Returns (published, taken)."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(_TAKE, {"batch": self.batch_size})).all()
            if not rows:
                return 0, 0
            # Every unsent row of our keys up to our last row, whoever holds it: a key may go only
            # while our rows are exactly its next unsent rows (no older row, no gap held by another).
            keys = sorted({r.ordering_key for r in rows})
            pending: dict[str, list[int]] = {}
            for key, row_id in await conn.execute(_PENDING, {"keys": keys, "last": rows[-1].id}):
                pending.setdefault(key, []).append(row_id)
            position: dict[str, int] = dict.fromkeys(keys, 0)
            blocked: set[str] = set()
            runs: dict[str, list[Any]] = {}
            for row in rows:
                key = row.ordering_key
                if key in blocked:
                    continue
                expected = pending.get(key, [])
                if position[key] >= len(expected) or expected[position[key]] != row.id:
                    blocked.add(key)  # an older row of this key is held by another relay
                    continue
                position[key] += 1
                runs.setdefault(key, []).append(row)
            # Keys are independent: their publishes (each a JetStream round trip) are in flight
            # together; within a key they go one after the other, in id order.
            sent = [
                row_id
                for done in await asyncio.gather(*map(self._publish_run, runs.values()))
                for row_id in done
            ]
            if sent:
                await conn.execute(_MARK_SENT, {"ids": sent})
        if sent and self.metrics is not None:
            self.metrics.outbox_published.inc(len(sent))
        return len(sent), len(rows)

    async def _publish_run(self, run: list[Any], /) -> list[int]:
        """Publish one key's rows in order; a failed publish stops the key for this pass."""
        done: list[int] = []
        for row in run:
            headers: dict[str, Any] = dict(row.headers or {})
            try:
                await self.bus.publish(
                    row.subject,
                    bytes(row.payload),
                    msg_id=row.msg_id,
                    headers={str(k): str(v) for k, v in headers.items()},
                )
            except PublishError as exc:
                if self.metrics is not None:
                    self.metrics.outbox_publish_errors.inc()
                logger.warning("outbox publish failed, will retry: %s", exc)
                break
            done.append(row.id)
        return done

    async def refresh_lag(self) -> tuple[int, float]:
        """Update the lag gauges; return (pending rows, age of the oldest in seconds)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.coalesce(
                            sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox_table.c.created_at)),
                            0,
                        ),
                    ).where(outbox_table.c.sent_at.is_(None))
                )
            ).one()
        pending, lag = int(row[0]), float(row[1])
        if self.metrics is not None:
            self.metrics.outbox_pending.set(pending)
            self.metrics.outbox_lag.set(lag)
        return pending, lag

    async def purge(self) -> int:
        """Delete up to 5,000 rows sent more than ``retention_seconds`` ago."""
        async with self.engine.begin() as conn:
            victims = (
                sa.select(outbox_table.c.id)
                .where(
                    outbox_table.c.sent_at.is_not(None),
                    outbox_table.c.sent_at
                    < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, self.retention_seconds),
                )
                .limit(5000)
                .scalar_subquery()
            )
            result = await conn.execute(outbox_table.delete().where(outbox_table.c.id.in_(victims)))
            return result.rowcount
