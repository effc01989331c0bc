"""Guarded writes: a write statement whose checks fail writes nothing at all; a start is one
statement that commits by itself, and one that finds its idempotency key taken writes nothing and
returns the instance that took the key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.repositories import InstanceRepository, WriteConflict, Writes
from wf_platform.db import OutboxMessage, OutboxWrite
from wf_platform.tenancy import TenantId

from .conftest import Suite


def one_step(name: str = "single") -> dict[str, Any]:
    return {"name": name, "version": "1.0.0", "steps": {"a": {"type": "machine", "step_type": "single.step"}}}


def conflicts(suite: Suite, source: str) -> float:
    registry = suite.orchestrator.platform.metrics.registry
    return registry.get_sample_value("wf_write_conflicts_total", {"source": source}) or 0.0


async def test_a_stale_write_writes_nothing_at_all(suite: Suite) -> None:
    await suite.register(one_step())
    started = await suite.start("single")
    db = suite.orchestrator.tenant_db(TenantId(suite.tenant))
    async with db.single_statement() as uow:
        repo = InstanceRepository(uow.conn)
        row = await repo.get(started["id"])
        assert row is not None
        writes = Writes()
        # Read at revision 1, but written as if read at 0: another writer got there first.
        writes.update(row.state, locked_revision=row.revision - 1, revision=row.revision)
        timer_id = str(uuid.uuid4())
        writes.add_timer(
            timer_id=timer_id,
            tenant=suite.tenant,
            instance_id=row.id,
            kind="deadline",
            due_at=datetime.now(UTC) + timedelta(hours=1),
        )
        msg_id = f"stale:{uuid.uuid4()}"
        message = OutboxMessage(
            tenant_id=suite.tenant,
            subject=f"wf.events.{suite.tenant}.instance.started",
            payload=b"{}",
            headers={},
            msg_id=msg_id,
            ordering_key=f"{suite.tenant}:{row.id}",
        )
        outbox = OutboxWrite([message], sent=[])
        with pytest.raises(WriteConflict):
            await repo.write(writes, outbox)
    async with db.transaction() as uow:
        conn = uow.conn
        assert (await InstanceRepository(conn).get(started["id"])) == row
        timers = await conn.execute(
            sa.text("SELECT count(*) FROM orch.timers WHERE timer_id = :t"), {"t": timer_id}
        )
        assert timers.scalar() == 0
        messages = await conn.execute(
            sa.text("SELECT count(*) FROM wf.outbox WHERE msg_id = :m"), {"m": msg_id}
        )
        assert messages.scalar() == 0


async def test_a_start_that_finds_its_idempotency_key_taken_returns_the_first_instance(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    await suite.register(one_step())
    await suite.start("single")  # the definition version is stored: later starts take one statement
    headers = suite.headers() | {"Idempotency-Key": "order-7"}
    body = {"definition": "single", "input": {"order": 7}}
    first = await suite.api.post("/v1/instances", json=body, headers=headers)
    assert first.status_code == 201
    look_up = InstanceRepository.by_idempotency_key
    looked_up: list[str] = []

    async def not_yet_on_the_first_look_up(self: InstanceRepository, key: str, /) -> Any:
        # The request's look-up before it submits ran before the first start committed; the
        # look-up after the conflict reads for real.
        looked_up.append(key)
        return None if len(looked_up) == 1 else await look_up(self, key)

    monkeypatch.setattr(InstanceRepository, "by_idempotency_key", not_yet_on_the_first_look_up)
    before = conflicts(suite, "start")
    second = await suite.api.post("/v1/instances", json=body, headers=headers)
    assert second.status_code == 201, second.text
    assert second.json()["id"] == first.json()["id"]
    assert looked_up == ["order-7", "order-7"]
    assert conflicts(suite, "start") == before + 1
    listed = await suite.api.get("/v1/instances", params={"definition": "single"}, headers=suite.headers())
    assert len(listed.json()["items"]) == 2  # the first start above and order-7, once


async def test_a_single_statement_unit_refuses_outbox_rows_it_did_not_write(suite: Suite) -> None:
    db = suite.orchestrator.tenant_db(TenantId(suite.tenant))
    with pytest.raises(RuntimeError, match="not written"):
        async with db.single_statement() as uow:
            await uow.publish(
                f"wf.events.{suite.tenant}.x", b"{}", msg_id=f"m:{uuid.uuid4()}", ordering_key="k"
            )
