"""The states this process wrote last, to apply a worker's result without reading the row first.

A result is normally one transaction: ``BEGIN``, lock the instance (``FOR UPDATE``), write, ``COMMIT``.
When this process wrote the instance's latest state itself (it started it, or applied its last
change: a worker's result, a task completion, a timer, an API call), it has that state and its
revision already; the result is then applied to it and written with one statement that commits by
itself, guarded by the revision (``orch.write_guard``: the statement fails as a whole, nothing
written, when the row moved on). One round trip instead of four.

Nothing here is the truth (DESIGN §7: several replicas may run, no in-memory truth): a state is
only used if the guarded write confirms it was the latest. A result the cached state would ignore
(a stale attempt, an unknown job) is not trusted either: that chunk takes the locked path, which
decides on the stored row.

Bounded: at most ``max_instances`` states and ``max_bytes`` of their JSON, least recently used first
out; ended instances are not kept (a late result for them takes the locked path and is dropped there).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable

import msgspec

from orchestrator.repositories import InstanceRow
from workflow_core import InstanceStatus

__all__ = ["InstanceCache"]

_ENDED = (InstanceStatus.COMPLETED, InstanceStatus.CANCELLED)


class InstanceCache:
    """Per (tenant, instance): the last state this process wrote, with its revision."""

    def __init__(self, *, max_instances: int = 4096, max_bytes: int = 16 * 2**20) -> None:
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self._rows: OrderedDict[tuple[str, str], tuple[InstanceRow, int]] = OrderedDict()
        """The row and its state's size in bytes."""
        self._jobs: dict[tuple[str, str], str] = {}
        """Running job id -> instance id, for the cached instances' activations."""
        self._bytes = 0
        self._busy: dict[tuple[str, str], asyncio.Future[None] | None] = {}
        """Instances claimed, with a future set on their release once someone waits for it."""

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, tenant: str, row: InstanceRow, /) -> None:
        """Remember ``row`` as the instance's latest stored state (it was just committed). An older
        revision than the one kept is ignored; an ended instance is forgotten."""
        key = (tenant, row.id)
        held = self._rows.get(key)
        if held is not None and held[0].revision >= row.revision:
            return
        if row.state.status in _ENDED:
            self.drop(tenant, row.id)
            return
        size = len(msgspec.json.encode(row.state))
        if size > self.max_bytes // 64:  # one large context would crowd out everything else
            self.drop(tenant, row.id)
            return
        if held is not None:
            self._forget(key, held[0])
        self._rows[key] = (row, size)
        self._bytes += size
        for job_id in _job_ids(row):
            self._jobs[tenant, job_id] = row.id
        while len(self._rows) > self.max_instances or self._bytes > self.max_bytes:
            oldest, (old_row, _) = next(iter(self._rows.items()))
            self._forget(oldest, old_row)

    def drop(self, tenant: str, instance_id: str, /) -> None:
        """Forget the instance (its stored state may have moved on)."""
        key = (tenant, instance_id)
        held = self._rows.get(key)
        if held is not None:
            self._forget(key, held[0])

    def claim(self, tenant: str, job_ids: Iterable[str], /) -> dict[str, InstanceRow] | None:
        """The cached instances of these jobs by job id, reserved for the caller until
        :meth:`release`; ``None`` (nothing reserved) unless every job is a running job of a cached
        instance that no other caller holds."""
        found = self._find(tenant, job_ids)
        if found is None or found[1] is not None:
            return None
        rows = found[0]
        keys = {(tenant, row.id) for row in rows.values()}
        for key in keys:
            self._rows.move_to_end(key)
        self._busy.update(dict.fromkeys(keys))
        return rows

    async def claim_waiting(
        self, tenant: str, job_ids: list[str], /, *, timeout: float = 1.0
    ) -> dict[str, InstanceRow] | None:
        """:meth:`claim`, but when its instances are only held by other claims, wait for their
        release (the holder then put the state it wrote) and claim again, up to ``timeout``: the
        results of a fan-out, arriving in concurrent chunks, go one after the other instead of
        conflicting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self._find(tenant, job_ids)
            if found is None:
                return None
            held = found[1]
            if held is None:
                return self.claim(tenant, job_ids)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            release = self._busy[held]
            if release is None:
                release = self._busy[held] = loop.create_future()
            try:
                # Shielded: the future is shared by every chunk waiting for this release.
                await asyncio.wait_for(asyncio.shield(release), remaining)
            except TimeoutError:
                return None

    def _find(
        self, tenant: str, job_ids: Iterable[str], /
    ) -> tuple[dict[str, InstanceRow], tuple[str, str] | None] | None:
        """The cached instances of these jobs by job id, and one of them another claim holds (or
        ``None``); ``None`` unless every job is a running job of a cached instance."""
        found: dict[str, InstanceRow] = {}
        held: tuple[str, str] | None = None
        for job_id in job_ids:
            instance_id = self._jobs.get((tenant, job_id))
            if instance_id is None:
                return None
            key = (tenant, instance_id)
            cached = self._rows.get(key)
            if cached is None or job_id not in _job_ids(cached[0]):
                return None
            if key in self._busy:
                held = key
            found[job_id] = cached[0]
        return found, held

    def release(self, tenant: str, instance_ids: Iterable[str], /) -> None:
        """End a :meth:`claim`."""
        for instance_id in instance_ids:
            released = self._busy.pop((tenant, instance_id), None)
            if released is not None and not released.done():
                released.set_result(None)

    def _forget(self, key: tuple[str, str], row: InstanceRow, /) -> None:
        _, size = self._rows.pop(key)
        self._bytes -= size
        tenant = key[0]
        for job_id in _job_ids(row):
            if self._jobs.get((tenant, job_id)) == row.id:
                del self._jobs[tenant, job_id]


def _job_ids(row: InstanceRow, /) -> list[str]:
    return [a.job_id for a in row.state.activations if a.job_id is not None]
