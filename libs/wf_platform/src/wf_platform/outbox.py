"""The transactional outbox and its relay.

Decision: one shared outbox table per service database, ``wf.outbox``, with a ``tenant_id`` column,
rather than one per tenant schema. The relay's scan is then a single index range over unsent rows
(partial index ``WHERE sent_at IS NULL``) however many tenants exist; per-tenant outboxes would need one
query per tenant per tick (1,000 tenants, 1,000 queries a second while idle). The business transaction
writes its rows (tenant schema) and its outbox rows (``wf`` schema) in the same database transaction,
so a message exists if and only if the state change committed.

Relay (:class:`OutboxRelay`), in every service process:

- publishes a commit's rows right after the commit, from memory (:meth:`OutboxRelay.committed`, the
  fast path: no query before the publish), when it may: the transaction reported the unsent rows of
  the same keys that existed when it wrote, and the relay is itself publishing every one of them
  (so it queues the new rows behind them). Otherwise (an older row it does not know: another
  replica's, or one whose publish failed) the rows are left to a pass. Rows published this way are
  marked sent by the service's next outbox statement (the relay lends them:
  :class:`~wf_platform.db.SentMarks`; under load no statement and no commit of their own), or
  after ``mark_delay_seconds`` by one ``UPDATE`` of the relay for all the rows still unmarked. The
  delay is short (10 ms): while a row is unmarked, another replica committing a row of the same
  key sees an older unsent row it does not know and goes through a pass (which publishes the first
  row again; JetStream drops the copy);
- passes: woken by a commit it could not publish itself, and on a timer (``outbox_poll_seconds``) for
  rows written by other replicas or left by a crash;
- takes a batch ``ORDER BY id ... FOR UPDATE SKIP LOCKED`` (several replicas each take other rows);
- publishes rows in id order with their stored ``Nats-Msg-Id`` and ``traceparent``, then marks them
  sent in the same transaction. A crash between publish and commit (or, on the fast path, between
  publish and the batched mark) leaves the rows unsent; the next relay republishes them with the same
  ids and JetStream's duplicate window drops the copies. A pass skips the rows its own fast path holds
  (checked again once its query returned), and the fast path leaves a commit whose rows a pass holds
  to that pass: the two paths of one relay do not both publish a row.
- keeps order per ``ordering_key`` (e.g. per instance) across replicas: a relay publishes a key's rows
  only while they are exactly that key's next unsent rows (SKIP LOCKED can hand a batch with a gap
  held by another replica); at the first older or missing row it leaves the key until the next pass.
  A failed publish stops its key for the pass;
- counts marks in ``wf_outbox_marked_messages{by="write"|"relay"}`` (by a service's statement, or
  by the relay's own);
- exports ``wf_outbox_pending_messages`` and ``wf_outbox_lag_seconds`` (age of the oldest unsent row;
  published rows count until they are marked, at most ``mark_delay_seconds`` while the database
  answers),
  and deletes sent rows after ``retention_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.bus import EventBus, PublishError
from wf_platform.db import CommittedOutbox, DriverStatement, OutboxMessage, outbox_table
from wf_platform.metrics import PlatformMetrics
from wf_platform.settings import ServiceSettings

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
    .where(
        outbox_table.c.sent_at.is_(None),
        sa.not_(outbox_table.c.id == sa.func.any(sa.bindparam("skip", type_=pg.ARRAY(sa.BigInteger)))),
    )
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
# The same statement for the fast path's batched mark, sent on the driver connection.
_MARK_SENT_NOW = DriverStatement(_MARK_SENT)
_REMEMBERED = 65_536
"""How many ids published on the fast path are remembered (to let later commits of their keys
queue behind them); far more than can be unsent at once."""


class OutboxRelay:
    """Publishes committed outbox rows; see the module docstring for the guarantees.

    It is the :class:`~wf_platform.db.SentMarks` of the service's units of work (:meth:`lend`,
    :meth:`settle`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        /,
        *,
        metrics: PlatformMetrics | None = None,
        # The services' defaults (a service passes its settings; tests may leave them out).
        poll_seconds: float = ServiceSettings.outbox_poll_seconds,
        batch_size: int = ServiceSettings.outbox_batch_size,
        retention_seconds: float = 3600.0,
        mark_delay_seconds: float = ServiceSettings.outbox_mark_delay_seconds,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.retention_seconds = retention_seconds
        self.mark_delay_seconds = mark_delay_seconds
        """How long published rows wait for a service statement to mark them before the relay does."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0
        # The fast path (see the module docstring).
        self._queued: set[int] = set()
        """Ids handed to the fast path and not yet published (nor given up)."""
        self._published: dict[int, None] = {}
        """Ids the fast path published (insertion-ordered; the oldest are forgotten)."""
        self._unmarked: list[int] = []
        """Ids published on the fast path and not yet marked sent."""
        self._marking: list[int] = []
        """Ids whose mark (the relay's own statement) is in flight."""
        self._lent: set[int] = set()
        """Ids lent to a service statement, not yet settled."""
        self._passing: set[int] = set()
        """Ids a pass took and is publishing (the fast path leaves a commit with one of them to it)."""
        self._mark_now = asyncio.Event()
        """Cuts the marker's wait short (``stop``)."""
        self._tails: dict[str, asyncio.Task[bool]] = {}
        """Per ordering key, the fast path's last publishing task (the next one waits for it)."""
        self._marker: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Ask for a pass now."""
        self._wake.set()

    def committed(self, outbox: CommittedOutbox, /) -> None:
        """A transaction committed these rows: publish them now if order allows, else ask for a pass.

        Without a running loop (``start`` not called) nothing is published here: the rows wait for a
        pass, as a relay that is switched off must leave them.
        """
        if not outbox.messages:
            return
        if (
            self._task is None
            or any(m.id is None or m.id in self._passing for m in outbox.messages)
            or any(i not in self._queued and i not in self._published for i in outbox.older)
        ):
            self.wake()
            return
        runs: dict[str, list[OutboxMessage]] = {}
        for message in outbox.messages:
            runs.setdefault(message.ordering_key, []).append(message)
        loop = asyncio.get_running_loop()
        for key, run in runs.items():
            self._queued.update(m.id for m in run)  # pyright: ignore[reportArgumentType] - ids checked above
            previous = self._tails.get(key)
            task = loop.create_task(self._publish_now(run, previous))
            self._tails[key] = task
            task.add_done_callback(partial(self._forget_tail, key))

    def _forget_tail(self, key: str, task: asyncio.Task[bool], /) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _publish_now(self, run: list[OutboxMessage], previous: asyncio.Task[bool] | None) -> bool:
        """Publish one key's rows of one commit after that key's earlier fast-path rows; True when
        all went. When an earlier run of the key failed, or a publish fails, the rest is left unsent
        for a pass (which keeps the order) and the relay is woken."""
        ok = True
        if previous is not None:
            try:
                ok = await asyncio.shield(previous)
            except Exception:  # a run that died is a run that failed
                ok = False
        published = 0
        if ok:
            for message in run:
                try:
                    await self.bus.publish(
                        message.subject, message.payload, msg_id=message.msg_id, headers=message.headers
                    )
                except PublishError as exc:
                    if self.metrics is not None:
                        self.metrics.outbox_publish_errors.inc()
                    logger.warning("outbox publish failed, left to the relay: %s", exc)
                    ok = False
                    break
                row_id = message.id
                assert row_id is not None
                self._queued.discard(row_id)
                self._published[row_id] = None
                self._unmarked.append(row_id)
                published += 1
            while len(self._published) > _REMEMBERED:
                del self._published[next(iter(self._published))]
        for message in run[published:]:
            self._queued.discard(message.id)  # pyright: ignore[reportArgumentType]
        if published:
            if self.metrics is not None:
                self.metrics.outbox_published.inc(published)
            self._mark_later()
        if not ok:
            self.wake()
        return ok

    def lend(self) -> list[int]:
        """The published rows not yet marked, for a service statement to mark (see ``SentMarks``)."""
        if not self._unmarked:
            return []
        ids, self._unmarked = self._unmarked, []
        self._lent.update(ids)
        return ids

    def settle(self, ids: Sequence[int], /, *, written: bool) -> None:
        """Lent ids back: marked by a committed statement (``written``), or for the relay to mark."""
        self._lent.difference_update(ids)
        if written:
            if self.metrics is not None:
                self.metrics.outbox_marked.labels(by="write").inc(len(ids))
            return
        self._unmarked.extend(ids)
        self._mark_later()

    def _mark_later(self) -> None:
        if self._marker is None or self._marker.done():
            self._marker = asyncio.get_running_loop().create_task(self._mark_published())

    async def _mark_published(self) -> None:
        """Mark sent the fast path's published rows that no service statement took while they
        waited (``mark_delay_seconds``): one statement for all of them, then wait again for the
        rows published meanwhile."""
        pause = self.mark_delay_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mark_now.wait(), timeout=pause)
            if not self._unmarked:
                return
            self._marking, self._unmarked = self._unmarked, []
            try:
                async with self.engine.connect() as conn:
                    # One statement is its own transaction: sent on the driver's connection, so no
                    # BEGIN / COMMIT round trips around it (and no session setting changed).
                    await _MARK_SENT_NOW.execute(conn, {"ids": self._marking})
            except Exception:
                # Still unsent: retried here; after a crash a pass republishes them (the
                # duplicate window drops the copies).
                self._unmarked[:0] = self._marking
                pause = min(30.0, pause * 2 + 0.5)
                logger.warning(
                    "marking %d published outbox rows sent failed", len(self._marking), exc_info=True
                )
                if self._mark_now.is_set():
                    return  # stopping: no retries (the event would not pause them)
            else:
                if self.metrics is not None:
                    self.metrics.outbox_marked.labels(by="relay").inc(len(self._marking))
                pause = self.mark_delay_seconds
            finally:
                self._marking = []

    def start(self) -> None:
        """Run the relay loop in the background (and publish commits on the fast path)."""
        if self._task is None:
            self._mark_now.clear()
            self._task = asyncio.create_task(self._loop(), name="wf-outbox-relay")

    async def stop(self) -> None:
        """Stop the loop; let fast-path publishes finish and mark them sent, briefly (whatever is
        left stays unsent and is republished by the next relay)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        pending = [t for t in self._tails.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        self._mark_now.set()  # what is unmarked now is marked at once, not after the delay
        if self._marker is not None and not self._marker.done():
            await asyncio.wait([self._marker], timeout=2.0)
        if self._unmarked and (self._marker is None or self._marker.done()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._mark_published(), timeout=2.0)
        for leftover in (*self._tails.values(), self._marker):
            if leftover is not None and not leftover.done():
                leftover.cancel()

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
        taken: set[int] = set()
        try:
            async with self.engine.begin() as conn:
                # Rows the fast path holds are its to publish (and to order). Asked again once the
                # rows are in: a commit while the query ran may have handed some of them to the fast
                # path (the query's snapshot saw them committed, the skip list did not). From then on
                # until this transaction ends, a commit reported with one of them leaves it to this
                # pass (``committed``): a row is published by one path, not both.
                rows = (
                    await conn.execute(_TAKE, {"batch": self.batch_size, "skip": list(self._fast_path_ids())})
                ).all()
                held = self._fast_path_ids()
                rows = [row for row in rows if row.id not in held]
                if not rows:
                    return 0, 0
                taken = {row.id for row in rows}
                self._passing |= taken
                sent = await self._publish_batch(conn, rows)
                if sent:
                    await conn.execute(_MARK_SENT, {"ids": sent})
        finally:
            self._passing -= taken
        if sent and self.metrics is not None:
            self.metrics.outbox_published.inc(len(sent))
            self.metrics.outbox_marked.labels(by="relay").inc(len(sent))
        return len(sent), len(rows)

    async def _publish_batch(self, conn: Any, rows: list[Any], /) -> list[int]:
        """Publish the batch's rows that may go now; the ids published."""
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
        return [
            row_id for done in await asyncio.gather(*map(self._publish_run, runs.values())) for row_id in done
        ]

    def _fast_path_ids(self) -> set[int]:
        """The rows the fast path holds: queued, published and not yet marked, being marked, lent."""
        return {*self._queued, *self._unmarked, *self._marking, *self._lent}

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
