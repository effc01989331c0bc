"""Task messages over real NATS: idempotent creation, tombstones, escalation, refused bodies."""

from __future__ import annotations

import asyncio

from task_inbox.services import TaskEscalatedMessage, TaskIntake
from wf_platform.plugin import get_platform
from wf_platform.tenancy import TenantId, tenant_schema
from workflow_core.messages import TaskCancelledMessage

from .conftest import ADMIN, Harness, created_message


async def test_created_twice_is_one_task_and_provisions_the_tenant(harness: Harness) -> None:
    message = created_message(harness.tenant, title="From NATS", context={"amount": 250})
    # Different Nats-Msg-Ids: JetStream keeps both, the inbox must still make one task.
    await harness.publish("created", message)
    await harness.publish("created", message)
    task = await harness.wait_for(message.task_id)
    assert task["title"] == "From NATS" and task["context"] == {"amount": 250}
    assert task["form_schema"] == message.form_schema and task["status"] == "open"
    await asyncio.sleep(0.5)
    task = await harness.wait_for(message.task_id)
    assert [h["action"] for h in task["history"]] == ["created"]
    listed = (await harness.api.get("/v1/tasks", headers=harness.headers(roles=ADMIN))).json()
    assert len(listed["items"]) == 1


async def test_cancelled_before_created_leaves_a_tombstone(harness: Harness) -> None:
    message = created_message(harness.tenant)
    cancel = TaskCancelledMessage(
        task_id=message.task_id,
        tenant=harness.tenant,
        instance_id=message.instance_id,
        reason="instance cancelled",
    )
    await harness.publish("cancelled", cancel)
    # Applied before the ``created`` is published: in one fetched batch the two may be applied in
    # either order (that race is the test below).
    await _counted(harness, 'wf_inbox_task_messages_total{event="cancelled",outcome="tombstoned"} 1.0')
    await harness.publish("created", message)
    await _counted(harness, 'wf_inbox_task_messages_total{event="created",outcome="tombstoned"} 1.0')
    response = await harness.api.get(f"/v1/tasks/{message.task_id}", headers=harness.headers(roles=ADMIN))
    assert response.status_code == 404


async def _counted(harness: Harness, sample: str, /) -> None:
    """Wait (bounded: 10 s) until the inbox's ``/metrics`` shows ``sample``."""
    for _ in range(200):
        if sample in (await harness.api.get("/metrics")).text:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never counted: {sample}")


async def test_a_cancel_applied_alongside_its_created_never_leaves_the_task_open(harness: Harness) -> None:
    # One fetched batch is applied concurrently, and replicas share the consumer: a task's
    # ``cancelled`` and ``created`` can be applied at the same time. Either order is fine (a tombstone
    # and no task, or a cancelled task); both committing unaware of each other would leave it open.
    platform = get_platform(harness.app)
    await platform.tenants.status(TenantId(harness.tenant))
    intake = TaskIntake(platform.tenant_db(TenantId(harness.tenant)))
    messages = [created_message(harness.tenant) for _ in range(40)]
    cancels = [
        TaskCancelledMessage(
            task_id=m.task_id, tenant=harness.tenant, instance_id=m.instance_id, reason="raced"
        )
        for m in messages
    ]
    for start in range(0, len(messages), 5):  # within the pool: five pairs at a time
        pairs = zip(messages[start : start + 5], cancels[start : start + 5], strict=True)
        await asyncio.gather(*(call for m, c in pairs for call in (intake.cancelled(c), intake.created(m))))
    states = []
    for message in messages:
        response = await harness.api.get(f"/v1/tasks/{message.task_id}", headers=harness.headers(roles=ADMIN))
        states.append("absent" if response.status_code == 404 else response.json()["status"])
    assert set(states) <= {"absent", "cancelled"}, states


async def test_cancelled_after_created_withdraws_the_task(harness: Harness) -> None:
    message = created_message(harness.tenant)
    await harness.publish("created", message)
    await harness.wait_for(message.task_id)
    cancel = TaskCancelledMessage(
        task_id=message.task_id, tenant=harness.tenant, instance_id=message.instance_id, reason="timer won"
    )
    await harness.publish("cancelled", cancel)
    task = await harness.wait_for(message.task_id, lambda t: t["status"] == "cancelled")
    assert task["cancel_reason"] == "timer won"
    complete = await harness.api.post(
        f"/v1/tasks/{message.task_id}/complete", json={"data": {}}, headers=harness.headers()
    )
    assert complete.status_code == 409 and complete.json()["code"] == "task_cancelled"


async def test_escalation_adds_groups_and_priority(harness: Harness) -> None:
    message = created_message(harness.tenant, candidate_groups=["finance"], priority=40)
    await harness.publish("created", message)
    await harness.wait_for(message.task_id)
    managers = harness.headers(sub="mia", groups=["managers"])
    assert (await harness.api.get(f"/v1/tasks/{message.task_id}", headers=managers)).status_code == 404
    escalation = TaskEscalatedMessage(
        task_id=message.task_id,
        tenant=harness.tenant,
        instance_id=message.instance_id,
        add_candidate_groups=["managers"],
        priority=90,
    )
    await harness.publish("escalated", escalation)
    task = await harness.wait_for(message.task_id, lambda t: t["priority"] == 90)
    assert task["candidate_groups"] == ["finance", "managers"]
    assert task["history"][-1]["action"] == "escalated"
    assert task["history"][-1]["details"]["added_candidate_groups"] == ["managers"]
    assert (await harness.api.get(f"/v1/tasks/{message.task_id}", headers=managers)).status_code == 200


async def test_bad_messages_are_refused_without_harm(harness: Harness) -> None:
    forged = created_message("someone_else", title="forged")  # body tenant != subject tenant
    await harness.publish("created", forged)
    await harness.publish("created", b"{not json")
    await harness.publish("created", created_message(harness.tenant, task_id="not-a-uuid"))
    marker = created_message(harness.tenant, title="marker")
    await harness.publish("created", marker)
    await harness.wait_for(marker.task_id)
    listed = (await harness.api.get("/v1/tasks", headers=harness.headers(roles=ADMIN))).json()
    assert [t["title"] for t in listed["items"]] == ["marker"]
    metrics = (await harness.api.get("/metrics")).text
    assert 'outcome="tenant_mismatch"' in metrics and 'outcome="undecodable"' in metrics


async def test_a_hundred_thousand_open_tasks_still_serve_a_filtered_page(harness: Harness) -> None:
    await harness.seed(title="warm up")  # provisions the schema
    platform = get_platform(harness.app)
    started = asyncio.get_running_loop().time()
    schema = tenant_schema(TenantId(harness.tenant))
    async with platform.engine.connect() as conn:
        # The driver's own execute: the seed may outlast the engine's per-statement timeout on a
        # busy machine (it is the test's setup, not a request).
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(
            f"""
                INSERT INTO {schema}.tasks (id, instance_id, definition_name, definition_version, step, title,
                    description, candidate_groups, priority, due_at, due_sort, status, created_at)
                SELECT gen_random_uuid(), 'inst-' || g, 'def' || (g % 10), '1.0.0', 'approve',
                       'Task number ' || g, 'bulk seeded',
                       ARRAY['group' || (g % 20), 'all'], g % 100,
                       now() + make_interval(mins => g % 5000), now() + make_interval(mins => g % 5000),
                       'open', now() - make_interval(secs => g)
                FROM generate_series(1, 100000) AS g
                """,
            timeout=600,
        )
        await driver.execute(f"ANALYZE {schema}.tasks", timeout=600)
    seeded = asyncio.get_running_loop().time() - started
    worker = harness.headers(sub="w", groups=["group7"])
    timings: list[float] = []
    report: list[str] = []
    for params in (
        {"candidate_group": "group7", "status": "open", "sort": "due", "limit": 50},
        {"status": "open", "sort": "-priority", "limit": 50},
        {"status": "open", "sort": "due", "definition": "def7", "limit": 50},
        {"status": "open", "q": "number 4242", "limit": 50},
    ):
        for _ in range(5):
            t0 = asyncio.get_running_loop().time()
            response = await harness.api.get("/v1/tasks", params=params, headers=worker)
            timings.append(asyncio.get_running_loop().time() - t0)
            assert response.status_code == 200, response.text
        items = response.json()["items"]
        report.append(f"{sorted(params.items())}: best {min(timings[-5:]) * 1000:.1f} ms")
        assert items, params
        assert all("group7" in t["candidate_groups"] for t in items)
    page = (
        await harness.api.get(
            "/v1/tasks", params={"candidate_group": "group7", "status": "open", "sort": "due"}, headers=worker
        )
    ).json()
    dues = [t["due_at"] for t in page["items"]]
    assert dues == sorted(dues) and len(dues) == 50 and page["next_cursor"]
    print(
        f"seeded 100k in {seeded:.2f}s; worst page {max(timings) * 1000:.1f} ms over {len(timings)} requests"
    )
    print("\n".join(report))
