"""Instances run end to end: real Postgres, nats-server and registry; workers are raw nats-py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from wf_platform.bus import EventBus
from workflow_core.messages import JobMessage, JobResult

from .conftest import Suite, fail, ok


def chain(name: str, *step_types: str, **extra: Any) -> dict[str, Any]:
    steps = {f"s{i}": {"type": "machine", "step_type": t} for i, t in enumerate(step_types)}
    edges = [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(len(step_types) - 1)]
    return {"name": name, "version": "1.0.0", "steps": steps, "edges": edges, **extra}


async def test_linear_instance_runs_to_completion(suite: Suite) -> None:
    await suite.register(chain("linear", "a.one", "a.two"))
    await suite.worker("a.one", ok({"one": 1}))
    await suite.worker("a.two", ok({"two": 2}))
    started = await suite.start("linear", {"amount": 5})
    assert started["definition"] == "linear" and started["version"] == "1.0.0"
    assert started["status"] == "running" and started["trace_id"]
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"] == {"amount": 5, "one": 1, "two": 2}
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert [(a["step"], a["outcome"], a["worker"]) for a in history["attempts"]] == [
        ("s0", "completed", "test-worker"),
        ("s1", "completed", "test-worker"),
    ]


async def test_exclusive_gateway_routes_on_a_condition(suite: Suite) -> None:
    await suite.register(
        {
            "name": "route",
            "version": "1.0.0",
            "steps": {
                "decide": {"type": "exclusive_gateway"},
                "big": {"type": "machine", "step_type": "r.big"},
                "small": {"type": "machine", "step_type": "r.small"},
            },
            "edges": [
                {"source": "decide", "target": "big", "condition": "amount > 100"},
                {"source": "decide", "target": "small", "default": True},
            ],
        }
    )
    await suite.worker("r.big", ok({"path": "big"}))
    await suite.worker("r.small", ok({"path": "small"}))
    big = await suite.start("route", {"amount": 250})
    small = await suite.start("route", {"amount": 5})
    assert (await suite.wait_status(big["id"], "completed"))["data"]["path"] == "big"
    assert (await suite.wait_status(small["id"], "completed"))["data"]["path"] == "small"


async def test_parallel_fork_and_join_runs_the_join_once(suite: Suite) -> None:
    joined: list[str] = []

    async def join(job: JobMessage) -> JobResult:
        joined.append(job.instance_id)
        return JobResult(
            job_id=job.job_id,
            attempt=job.attempt,
            status="completed",
            output={"left_seen": job.input.get("left")},
        )

    async def slow_left(job: JobMessage) -> JobResult:
        await asyncio.sleep(0.3)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={"left": True})

    await suite.register(
        {
            "name": "fork",
            "version": "1.0.0",
            "steps": {
                "split": {"type": "parallel_gateway"},
                "left": {"type": "machine", "step_type": "p.left"},
                "right": {"type": "machine", "step_type": "p.right"},
                "join": {"type": "machine", "step_type": "p.join"},
            },
            "edges": [
                {"source": "split", "target": "left"},
                {"source": "split", "target": "right"},
                {"source": "left", "target": "join"},
                {"source": "right", "target": "join"},
            ],
        }
    )
    await suite.worker("p.left", slow_left)
    await suite.worker("p.right", ok({"right": True}))
    await suite.worker("p.join", join)
    started = await suite.start("fork")
    done = await suite.wait_status(started["id"], "completed")
    assert joined == [started["id"]]
    assert done["data"]["left_seen"] is True and done["data"]["right"] is True


async def test_inclusive_split_and_groups_of_each_kind(suite: Suite) -> None:
    await suite.register(
        {
            "name": "groups",
            "version": "1.0.0",
            "steps": {
                "split": {"type": "inclusive_gateway"},
                "seq": {
                    "type": "sequential_group",
                    "steps": [
                        {"name": "a", "type": "machine", "step_type": "g.a"},
                        {"name": "b", "type": "machine", "step_type": "g.b"},
                    ],
                },
                "par": {
                    "type": "parallel_group",
                    "steps": [
                        {"name": "c", "type": "machine", "step_type": "g.c"},
                        {"name": "d", "type": "machine", "step_type": "g.d"},
                    ],
                },
                "never": {"type": "machine", "step_type": "g.never"},
                "cond": {
                    "type": "conditional_group",
                    "branches": [
                        {
                            "condition": "amount > 100",
                            "step": {"name": "e", "type": "machine", "step_type": "g.e"},
                        }
                    ],
                    "default": {"name": "f", "type": "machine", "step_type": "g.f"},
                },
            },
            "edges": [
                {"source": "split", "target": "seq", "condition": "amount > 1"},
                {"source": "split", "target": "par", "condition": "amount > 2"},
                {"source": "split", "target": "never", "condition": "amount > 1000"},
                {"source": "seq", "target": "cond"},
                {"source": "par", "target": "cond"},
            ],
        }
    )
    ran: list[str] = []

    def recording(name: str) -> Any:
        async def handler(job: JobMessage) -> JobResult:
            ran.append(name)
            return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={name: True})

        return handler

    for name in "abcdef":
        await suite.worker(f"g.{name}", recording(name))
    started = await suite.start("groups", {"amount": 50})
    done = await suite.wait_status(started["id"], "completed")
    assert sorted(ran) == ["a", "b", "c", "d", "f"]
    assert ran.count("f") == 1 and ran[-1] == "f"
    assert ran.index("a") < ran.index("b")
    assert done["data"]["f"] is True


async def test_bounded_loop_timer_and_signal(suite: Suite) -> None:
    await suite.register(
        {
            "name": "loop",
            "version": "1.0.0",
            "steps": {
                "count": {"type": "machine", "step_type": "l.count", "max_visits": 5},
                "check": {"type": "exclusive_gateway"},
                "nap": {"type": "timer", "duration": 0.2},
                "paid": {"type": "signal", "signal": "payment.received"},
            },
            "edges": [
                {"source": "count", "target": "check"},
                {"source": "check", "target": "count", "condition": "n < 3"},
                {"source": "check", "target": "nap", "default": True},
                {"source": "nap", "target": "paid"},
            ],
            "start": ["count"],
        }
    )

    async def count(job: JobMessage) -> JobResult:
        return JobResult(
            job_id=job.job_id,
            attempt=job.attempt,
            status="completed",
            output={"n": int(job.input.get("n", 0)) + 1},
        )

    await suite.worker("l.count", count)
    started = await suite.start("loop")
    waiting = await suite.wait_for(
        started["id"], lambda b: any(s["step"] == "paid" for s in b["active_steps"])
    )
    assert waiting["status"] == "waiting" and waiting["data"]["n"] == 3
    response = await suite.api.post(
        f"/v1/instances/{started['id']}/signals/payment.received",
        json={"data": {"paid": 10}},
        headers=suite.headers(),
    )
    assert response.status_code == 200, response.text
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"]["paid"] == 10


async def test_retry_with_backoff_then_success(suite: Suite) -> None:
    await suite.register(
        chain("flaky", "f.flaky")
        | {
            "steps": {
                "s0": {
                    "type": "machine",
                    "step_type": "f.flaky",
                    "retry": {"max_attempts": 3, "backoff": "fixed", "initial_interval": 0.2},
                }
            }
        }
    )
    attempts: list[tuple[int, float]] = []

    async def flaky(job: JobMessage) -> JobResult:
        attempts.append((job.attempt, asyncio.get_running_loop().time()))
        if job.attempt < 3:
            return await fail("Transient")(job)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={"ok": True})

    await suite.worker("f.flaky", flaky)
    started = await suite.start("flaky")
    await suite.wait_status(started["id"], "completed")
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert all(b - a >= 0.18 for (_, a), (_, b) in itertools.pairwise(attempts))


async def test_retries_exhausted_become_an_incident_and_retry_completes(suite: Suite) -> None:
    await suite.register(
        chain("fragile", "f.fragile")
        | {
            "steps": {
                "s0": {
                    "type": "machine",
                    "step_type": "f.fragile",
                    "retry": {"max_attempts": 2, "initial_interval": 0.05},
                }
            }
        }
    )
    healthy = asyncio.Event()

    async def fragile(job: JobMessage) -> JobResult:
        if not healthy.is_set():
            return await fail("Down")(job)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed", output={"fixed": True})

    await suite.worker("f.fragile", fragile)
    started = await suite.start("fragile")
    failed = await suite.wait_status(started["id"], "failed")
    assert failed["incidents"][0]["kind"] == "step_failed" and failed["incidents"][0]["step"] == "s0"
    healthy.set()
    response = await suite.api.post(f"/v1/instances/{started['id']}/retry", json={}, headers=suite.headers())
    assert response.status_code == 200, response.text
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"]["fixed"] is True
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert [a["attempt"] for a in history["attempts"]] == [1, 2, 3]


async def test_a_step_past_its_deadline_is_redispatched_and_the_late_result_dropped(suite: Suite) -> None:
    await suite.register(
        chain("slow", "s.slow")
        | {
            "steps": {
                "s0": {
                    "type": "machine",
                    "step_type": "s.slow",
                    "timeout": 0.3,
                    "retry": {"max_attempts": 3, "initial_interval": 0.05},
                }
            }
        }
    )
    first_job: list[JobMessage] = []

    async def slow(job: JobMessage) -> JobResult | None:
        if job.attempt == 1:
            first_job.append(job)
            return None  # never answers in time
        return JobResult(
            job_id=job.job_id, attempt=job.attempt, status="completed", output={"attempt": job.attempt}
        )

    await suite.worker("s.slow", slow)
    started = await suite.start("slow")
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"]["attempt"] == 2
    late = JobResult(job_id=first_job[0].job_id, attempt=1, status="completed", output={"late": True})
    await suite.js.publish(f"wf.results.{suite.tenant}", __import__("msgspec").json.encode(late))
    await asyncio.sleep(0.5)
    assert "late" not in (await suite.get(started["id"]))["data"]
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert [a["outcome"] for a in history["attempts"]] == ["timed_out", "completed"]


async def test_human_step_through_task_messages_and_cancel_withdraws_tasks(suite: Suite) -> None:
    await suite.register(
        {
            "name": "approve",
            "version": "1.0.0",
            "steps": {
                "review": {
                    "type": "human",
                    "title": "Review",
                    "candidate_groups": ["finance"],
                    "form_schema": {
                        "type": "object",
                        "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"],
                    },
                },
                "after": {"type": "machine", "step_type": "h.after"},
            },
            "edges": [{"source": "review", "target": "after"}],
        }
    )
    await suite.worker("h.after", ok({"after": True}))
    inbox = await suite.task_messages()
    started = await suite.start("approve", {"amount": 3})
    task = await suite.next_task(inbox)
    assert task.title == "Review" and task.candidate_groups == ["finance"] and task.context == {"amount": 3}
    assert (await suite.get(started["id"]))["status"] == "waiting"
    await suite.complete_task(task, {"ok": True})
    done = await suite.wait_status(started["id"], "completed")
    assert done["data"]["ok"] is True and done["data"]["after"] is True

    second = await suite.start("approve")
    second_task = await suite.next_task(inbox)
    cancelled_sub = await suite.js.pull_subscribe(
        f"wf.tasks.{suite.tenant}.cancelled", durable=f"c-{suite.tenant}", stream="WF_TASKS"
    )
    response = await suite.api.post(
        f"/v1/instances/{second['id']}/cancel", json={"reason": "customer left"}, headers=suite.headers()
    )
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    (message,) = await cancelled_sub.fetch(1, timeout=10)
    assert second_task.task_id.encode() in message.data
    again = await suite.api.post(f"/v1/instances/{second['id']}/cancel", json={}, headers=suite.headers())
    assert again.status_code == 409


async def test_results_apply_once_stale_and_foreign_results_are_dropped(suite: Suite) -> None:
    import msgspec

    jobs: list[JobMessage] = []
    release = asyncio.Event()

    async def capture(job: JobMessage) -> None:
        jobs.append(job)
        release.set()

    await suite.register(chain("once", "o.step", "o.next"))
    await suite.worker("o.step", capture)  # type: ignore[arg-type]
    counted: list[str] = []

    async def count_next(job: JobMessage) -> JobResult:
        counted.append(job.job_id)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed")

    await suite.worker("o.next", count_next)
    started = await suite.start("once", {"n": 0})
    await asyncio.wait_for(release.wait(), 10)
    job = jobs[0]
    result = msgspec.json.encode(
        JobResult(job_id=job.job_id, attempt=1, status="completed", output={"hits": 1})
    )
    for _ in range(5):
        await suite.js.publish(f"wf.results.{suite.tenant}", result)
    stale = msgspec.json.encode(
        JobResult(job_id=job.job_id, attempt=9, status="completed", output={"stale": True})
    )
    await suite.js.publish(f"wf.results.{suite.tenant}", stale)
    done = await suite.wait_status(started["id"], "completed")
    await asyncio.sleep(0.3)
    assert len(counted) == 1
    assert "stale" not in done["data"]
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert len(history["attempts"]) == 2

    # another tenant naming this tenant's job: dropped; the instance is not touched
    other = await suite.start("once", {"n": 1})
    for _ in range(200):
        if len(jobs) >= 2:
            break
        await asyncio.sleep(0.05)
    foreign = msgspec.json.encode(
        JobResult(job_id=jobs[1].job_id, attempt=1, status="completed", output={"forged": True})
    )
    await suite.js.publish("wf.results.evil_corp", foreign)
    await asyncio.sleep(0.5)
    body = await suite.get(other["id"])
    assert body["status"] == "running" and "forged" not in body["data"]


async def test_cancel_while_a_step_runs_drops_its_late_result(suite: Suite) -> None:
    import msgspec

    held: list[JobMessage] = []
    arrived = asyncio.Event()

    async def hold(job: JobMessage) -> None:
        held.append(job)
        arrived.set()

    await suite.register(chain("held", "c.held", "c.after"))
    await suite.worker("c.held", hold)  # type: ignore[arg-type]
    after: list[str] = []

    async def record_after(job: JobMessage) -> JobResult:
        after.append(job.job_id)
        return JobResult(job_id=job.job_id, attempt=job.attempt, status="completed")

    await suite.worker("c.after", record_after)
    started = await suite.start("held")
    await asyncio.wait_for(arrived.wait(), 10)
    response = await suite.api.post(
        f"/v1/instances/{started['id']}/cancel", json={"reason": "stop"}, headers=suite.headers()
    )
    assert response.json()["status"] == "cancelled" and response.json()["cancel_reason"] == "stop"
    late = JobResult(job_id=held[0].job_id, attempt=1, status="completed", output={"late": True})
    await suite.js.publish(f"wf.results.{suite.tenant}", msgspec.json.encode(late))
    await asyncio.sleep(0.5)
    body = await suite.get(started["id"])
    assert body["status"] == "cancelled" and "late" not in body["data"] and after == []
    history = (await suite.api.get(f"/v1/instances/{started['id']}/history", headers=suite.headers())).json()
    assert [a["outcome"] for a in history["attempts"]] == ["cancelled"]


async def test_an_overdue_task_is_escalated(suite: Suite) -> None:
    await suite.register(
        {
            "name": "overdue",
            "version": "1.0.0",
            "steps": {
                "review": {
                    "type": "human",
                    "title": "Review",
                    "candidate_groups": ["clerks"],
                    "due_in": 0.3,
                    "escalation": {"candidate_groups": ["managers"], "priority": 90},
                }
            },
        }
    )
    escalations = await suite.js.pull_subscribe(
        f"wf.tasks.{suite.tenant}.escalated", durable=f"esc-{suite.tenant}", stream="WF_TASKS"
    )
    inbox = await suite.task_messages()
    started = await suite.start("overdue")
    task = await suite.next_task(inbox)
    assert task.due_at is not None
    (message,) = await escalations.fetch(1, timeout=10)
    body = __import__("json").loads(message.data)
    assert body == {
        "task_id": task.task_id,
        "tenant": suite.tenant,
        "instance_id": started["id"],
        "add_candidate_groups": ["managers"],
        "priority": 90,
    }
    assert (await suite.get(started["id"]))["status"] == "waiting"


class _HeldStartedEvents:
    """The relay's bus, holding every ``instance.started`` publish until released (a slow ack)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.release = asyncio.Event()
        self.held = 0

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        if subject.endswith(".instance.started"):
            self.held += 1
            await self.release.wait()
        await self.bus.publish(subject, payload, msg_id=msg_id, headers=headers)


async def test_jobs_do_not_wait_for_their_instance_s_events_and_events_keep_their_order(suite: Suite) -> None:
    """A job is ordered only with its own attempts: it goes out while its instance's ``started``
    event still waits for its acknowledgement. The instance's events keep their order."""
    relay = suite.orchestrator.platform.relay
    held = _HeldStartedEvents(relay.bus)
    relay.bus = held
    events = await suite.js.subscribe(f"wf.events.{suite.tenant}.instance.*", stream="WF_EVENTS")
    fork = {
        "name": "fork3",
        "version": "1.0.0",
        "steps": {
            "split": {"type": "parallel_gateway"},
            **{f"b{i}": {"type": "machine", "step_type": "f.branch"} for i in range(3)},
            "end": {"type": "machine", "step_type": "f.end"},
        },
        "edges": [
            *({"source": "split", "target": f"b{i}"} for i in range(3)),
            *({"source": f"b{i}", "target": "end"} for i in range(3)),
        ],
    }
    await suite.register(fork)
    await suite.worker("f.branch", ok())
    await suite.worker("f.end", ok())
    try:
        started = await suite.start("fork3")
        # Every job ran and the instance ended while its ``started`` event was still held.
        await suite.wait_status(started["id"], "completed", timeout=15)
        assert held.held == 1
        with pytest.raises(TimeoutError):
            await events.next_msg(timeout=0.3)
    finally:
        held.release.set()
    first, second = (await events.next_msg(timeout=10), await events.next_msg(timeout=10))
    assert [first.subject.rsplit(".", 1)[1], second.subject.rsplit(".", 1)[1]] == ["started", "completed"]
    assert all(started["id"].encode() in m.data for m in (first, second))
    await events.unsubscribe()
