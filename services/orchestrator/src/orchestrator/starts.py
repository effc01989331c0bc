"""Group commit for starts: the starts that arrive while a tenant's previous commit runs share the next.

A start is one instance row, its first attempts and timers, and its outbox rows. Written one
transaction per request, most of a start's cost is round trips (BEGIN, one statement per table,
COMMIT) and the commit's WAL flush. :class:`StartBatcher` writes every start queued for a tenant
with one statement instead, which commits by itself (no BEGIN, no COMMIT): the first start of an
idle tenant goes at once (no added latency); starts arriving while that write runs wait for it and
then go together, up to ``max_batch``. A definition version the tenant's table may lack is stored
first. A batch whose statement found an idempotency key taken (it then wrote nothing) is written
again one start per statement, so that only that start is refused.

Each start keeps its own trace: its outbox rows carry its own ``traceparent`` and its dispatch
spans are children of its own start span (the OpenTelemetry context is captured at submit).
A batch that fails is retried one start per transaction, so a start that cannot be stored fails
alone and the others are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opentelemetry import context as otel_context

from orchestrator.repositories import InstanceRepository, NewInstance, WriteConflict, Writes
from wf_platform.db import TenantDatabase, UnitOfWork
from workflow_core import InstanceState
from workflow_core.models import Command

__all__ = ["PendingStart", "StartBatcher"]

logger = logging.getLogger("orchestrator.starts")


@dataclass(slots=True)
class PendingStart:
    """One start waiting for its tenant's next commit."""

    instance: NewInstance
    commands: list[Command]
    definition: tuple[str, str, str, dict[str, object]] | None
    """(name, version, digest, wire) when the tenant's table may not have this version yet."""
    context: otel_context.Context = field(default_factory=otel_context.get_current)
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def state(self) -> InstanceState:
        """The new instance's first state."""
        return self.instance.state


Effects = Callable[[UnitOfWork, Writes, PendingStart], Awaitable[None]]
"""What a stored start causes in its transaction (events, jobs, timers): the runtime's carry-out."""


class StartBatcher:
    """Per-tenant group commit of starts; see the module docstring."""

    def __init__(
        self,
        effects: Effects,
        *,
        max_batch: int = 64,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self.effects = effects
        self.max_batch = max_batch
        self.on_conflict = on_conflict
        """Called when a batch's statement found an idempotency key taken (and wrote nothing)."""
        self._queues: dict[str, list[PendingStart]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}

    async def submit(self, db: TenantDatabase, start: PendingStart, /) -> bool:
        """Store ``start``; False when its idempotency key was already taken (nothing stored)."""
        tenant = db.tenant
        self._queues.setdefault(tenant, []).append(start)
        if tenant not in self._writers:
            self._writers[tenant] = asyncio.get_running_loop().create_task(
                self._drain(db), name=f"starts {tenant}"
            )
        # shield: a client that disconnects must not cancel the commit of the starts it shares.
        return await asyncio.shield(start.done)

    async def _drain(self, db: TenantDatabase) -> None:
        tenant = db.tenant
        try:
            while queue := self._queues.get(tenant):
                batch, self._queues[tenant] = queue[: self.max_batch], queue[self.max_batch :]
                await self._commit(db, batch)
        finally:
            del self._writers[tenant]
            if not self._queues.get(tenant):
                self._queues.pop(tenant, None)

    async def _commit(self, db: TenantDatabase, batch: list[PendingStart]) -> None:
        try:
            stored = await self._write(db, batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exception=exc)
                return
            logger.warning("a batch of %d starts failed; storing them one by one", len(batch), exc_info=True)
            for start in batch:
                await self._commit(db, [start])
            return
        for start in batch:
            _settle(start, result=start.state.instance_id in stored)

    async def _write(self, db: TenantDatabase, batch: list[PendingStart]) -> set[str]:
        """Store the batch; the ids stored (a start whose idempotency key is taken is not)."""
        definitions = {s.definition[:2]: s.definition for s in batch if s.definition is not None}
        if definitions:
            # Before the starts that need them; immutable, so storing one twice changes nothing.
            async with db.transaction() as uow:
                repo = InstanceRepository(uow.conn)
                for name, version, digest, wire in definitions.values():
                    await repo.store_definition(name=name, version=version, digest=digest, wire=dict(wire))
        try:
            await self._write_at_once(db, batch)
        except WriteConflict:
            if self.on_conflict is not None:
                self.on_conflict()
        else:
            return {s.state.instance_id for s in batch}
        # An idempotency key was taken meanwhile (the statement wrote nothing): each start alone,
        # so that only the one whose key is taken is refused.
        stored: set[str] = set()
        for start in batch if len(batch) > 1 else ():
            with contextlib.suppress(WriteConflict):
                await self._write_at_once(db, [start])
                stored.add(start.state.instance_id)
        return stored

    async def _write_at_once(self, db: TenantDatabase, batch: list[PendingStart]) -> None:
        """One statement that commits by itself (no BEGIN, no COMMIT), all or nothing."""
        async with db.single_statement() as uow:
            writes = Writes()
            for start in batch:
                await self._effects_in_context(uow, writes, start)
            outbox = uow.take_outbox()
            repo = InstanceRepository(uow.conn)
            uow.outbox_written(outbox, *await repo.start([s.instance for s in batch], writes, outbox))

    async def _effects_in_context(self, uow: UnitOfWork, writes: Writes, start: PendingStart) -> None:
        token = otel_context.attach(start.context)
        try:
            await self.effects(uow, writes, start)
        finally:
            otel_context.detach(token)


def _settle(start: PendingStart, *, result: bool = False, exception: BaseException | None = None) -> None:
    if start.done.done():
        return
    if exception is not None:
        start.done.set_exception(exception)
    else:
        start.done.set_result(result)
