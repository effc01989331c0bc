"""The fast fault tier: each test breaks one thing under load, then checks the books.

Postgres and nats-server are this module's own (the session's shared ones stay healthy), the
orchestrator reaches them through TCP proxies, and every test ends with `faultkit.account`: every
accepted start finished, none lost, no effect duplicated beyond at-least-once, the outbox drained.
The harness, and exactly what at-least-once allows, is documented in ``faultkit.py``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Literal

import asyncpg
import httpx
import msgspec
import nats
import pytest
from tests.integration.faultkit import (
    Infra,
    Stack,
    account,
    assert_books,
    chain_definition,
    completed,
    cut_every,
    infra_for,
    stack_for,
)

from wf_platform.testing import stream_subject_counts
from workflow_core.messages import JobMessage, JobResult


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    with infra_for(tmp_path_factory.mktemp("faults")) as infra:
        yield infra


async def test_baseline_without_faults_the_books_balance(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        await stack.load.burst(30)
        books = await account(stack)
        assert_books(books, label="baseline")
        assert books.started == 30 and books.duplicated_effects == 0


async def test_orchestrator_kill_9_at_random_points_under_load(infra: Infra) -> None:
    rng = random.Random(8)
    async with stack_for(infra) as stack:
        await stack.worker()
        # One kill here (an orchestrator start costs 10-20 s of CPU on this machine); the soak in
        # `make test-chaos` kills it again and again.
        load = asyncio.get_running_loop().create_task(stack.load.steady(rate=15, seconds=8))
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        await stack.restart_orchestrator(kill=True)
        await load
        books = await account(stack)
        assert_books(books, label="orchestrator kill -9")
        assert books.started >= 100


async def test_relay_killed_after_publishing_before_marking_sent_publishes_nothing_twice(
    infra: Infra,
) -> None:
    """A trigger drops every "mark sent" (the relay's own ``UPDATE`` and the marks that business
    statements carry): the published rows stay unsent, as when the process dies between a publish
    and the commit of its mark. Then kill -9.

    The restarted relay republishes the same rows with the same ``Nats-Msg-Id``s and JetStream's
    duplicate window drops the copies: every job is stored, and executed, once.
    """
    async with stack_for(infra) as stack:
        admin = await asyncpg.connect(infra.pg.url_for(stack.database))
        try:
            await admin.execute(DROP_MARKS)
            ids = await stack.load.burst(20)
            assert len(ids) == 20
            jobs = f"wf.jobs.{stack.tenant}.>"
            for _ in range(100):  # bounded: until every job went out on the fast path
                if await stream_count(infra, jobs) >= 20:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the marks' turn (the relay waits 0.01 s for a statement)
            assert await stream_count(infra, jobs) == 20
            unsent_jobs = await admin.fetchval(
                "SELECT count(*) FROM wf.outbox WHERE sent_at IS NULL AND subject LIKE 'wf.jobs.%'"
            )
            assert unsent_jobs == 20  # all published, none marked sent
            stack.orchestrator.kill()
            await admin.execute("DROP TRIGGER fk_drop_marks ON wf.outbox")
            await asyncio.to_thread(stack.orchestrator.restart)
            for _ in range(100):
                if await stack.outbox_unsent() == 0:
                    break
                await asyncio.sleep(0.1)
            assert await stack.outbox_unsent() == 0
            assert await stream_count(infra, jobs) == 20, "a republished job was stored twice"
        finally:
            await admin.execute("DROP TRIGGER IF EXISTS fk_drop_marks ON wf.outbox")
            await admin.close()
        await stack.worker()
        books = await account(stack)
        assert_books(books, label="relay killed before marking sent")
        assert books.executions == 60 and books.duplicated_effects == 0


DROP_MARKS = """
CREATE OR REPLACE FUNCTION public.fk_drop_marks() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER fk_drop_marks BEFORE UPDATE ON wf.outbox FOR EACH ROW
    WHEN (OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL) EXECUTE FUNCTION public.fk_drop_marks();
"""


async def stream_count(infra: Infra, subject: str) -> int:
    nc = await nats.connect(infra.nats.url, connect_timeout=5)
    try:
        counts = await stream_subject_counts(nc.jetstream(), "WF_JOBS", subject)
        return sum(counts.values())
    finally:
        await nc.close()


async def test_nats_server_kill_9_and_restart_with_the_same_store_under_load(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        load = asyncio.get_running_loop().create_task(stack.load.steady(rate=15, seconds=8))
        await asyncio.sleep(3)
        infra.nats.kill()
        killed_at = time.monotonic()
        await asyncio.sleep(1)
        await asyncio.to_thread(infra.nats.restart)
        await load
        books = await account(stack, ack_loss_allowed_before=killed_at)
        assert_books(books, label="nats-server kill -9")
        assert books.started >= 100


async def test_nats_server_paused_longer_than_the_ack_wait(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        load = asyncio.get_running_loop().create_task(stack.load.steady(rate=15, seconds=10))
        await asyncio.sleep(2)
        infra.nats.pause()
        await asyncio.sleep(6)  # the orchestrator's ack wait is 3 s, the worker's 4 s
        infra.nats.resume()
        await load
        books = await account(stack)
        assert_books(books, label="nats-server paused")
        assert books.started >= 100


async def probe(
    stack: Stack, instance_id: str, *, client_timeout: float = 10.0
) -> list[tuple[str, float, str]]:
    """One read and one start against the API: (status or error, seconds, Retry-After)."""
    found: list[tuple[str, float, str]] = []
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=client_timeout) as client:
        for method, path, body in (
            ("GET", f"/v1/instances/{instance_id}", None),
            ("POST", "/v1/instances", {"definition": "fk_chain", "input": {"probe": True}}),
        ):
            began = time.monotonic()
            try:
                response = await client.request(method, path, json=body, headers=stack.headers)
            except httpx.HTTPError as exc:
                found.append((type(exc).__name__, time.monotonic() - began, ""))
                continue
            found.append(
                (str(response.status_code), time.monotonic() - began, response.headers.get("retry-after", ""))
            )
    return found


async def test_postgres_stopped_immediate_and_restarted_while_completions_are_in_flight(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        ids = await stack.load.burst(30)
        load = asyncio.get_running_loop().create_task(stack.load.steady(rate=10, seconds=6))
        await asyncio.sleep(1)
        await asyncio.to_thread(infra.pg.stop, mode="immediate")
        await asyncio.sleep(1)
        answers = await probe(stack, ids[0])
        await asyncio.sleep(2)
        answers += await probe(stack, ids[0])
        await asyncio.to_thread(infra.pg.restart)
        await load
        print("answers while Postgres was down:", answers)
        for status, seconds, retry_after in answers:
            assert status == "503" and retry_after, (status, retry_after)
            assert seconds < 10
        books = await account(stack)
        assert_books(books, label="postgres stopped -m immediate")


async def test_postgres_paused_under_load(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        ids = await stack.load.burst(20)
        load = asyncio.get_running_loop().create_task(stack.load.steady(rate=10, seconds=8))
        await asyncio.sleep(1)
        infra.pg.pause()
        try:
            answers = await probe(stack, ids[0], client_timeout=15)
        finally:
            infra.pg.resume()
        await load
        print("answers while Postgres was paused:", answers)
        for status, seconds, retry_after in answers:
            assert status == "503" and retry_after and seconds < 15, (status, seconds, retry_after)
        books = await account(stack)
        assert_books(books, label="postgres paused")


async def test_a_worker_killed_after_its_effect_and_before_its_result(infra: Infra) -> None:
    victims: list[str] = []

    async def die_once(job: JobMessage) -> JobResult | Literal["die"] | None:
        if not victims and job.step == "s1":
            victims.append(job.job_id)
            return "die"
        return completed(job)

    async with stack_for(infra) as stack:
        first = await stack.worker(policy=die_once, ack_wait=2.0)
        await stack.load.burst(20)
        await asyncio.wait_for(first.dead.wait(), 30)
        await stack.worker(ack_wait=2.0)  # its replacement, on the same durable consumer
        books = await account(stack)
        assert_books(books, label="worker killed after effect")
        (victim,) = victims
        runs = [runs for (job, _), runs in stack.ledger.outcomes.items() if job == victim]
        assert runs == [["unconfirmed", "confirmed"]], "the victim's job ran again, once"
        assert books.excused_duplicates >= 1 and not books.unexcused_duplicates


async def test_duplicate_stale_and_forged_results_under_load_change_nothing(infra: Infra) -> None:
    """Every result is also sent again (another Nats-Msg-Id, so JetStream keeps it), a stale attempt
    and a copy for another tenant: each instance still completes once with its own outputs."""
    async with stack_for(infra) as stack:
        nc = await nats.connect(infra.nats.url)
        js = nc.jetstream()

        async def noisy(job: JobMessage) -> JobResult:
            result = completed(job)
            stale = JobResult(
                job_id=job.job_id, attempt=job.attempt + 7, status="completed", output={"stale": 1}
            )
            forged = JobResult(
                job_id=job.job_id, attempt=job.attempt, status="completed", output={"forged": 1}
            )
            await js.publish(f"wf.results.{stack.tenant}", msgspec.json.encode(result))
            await js.publish(f"wf.results.{stack.tenant}", msgspec.json.encode(stale))
            await js.publish("wf.results.fk_someone_else", msgspec.json.encode(forged))
            return result

        try:
            await stack.worker(policy=noisy)
            ids = await stack.load.burst(30)
            books = await account(stack)
            assert_books(books, label="duplicate, stale, forged results")
            async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=10) as client:
                for instance in ids[:10]:
                    data = (await client.get(f"/v1/instances/{instance}", headers=stack.headers)).json()[
                        "data"
                    ]
                    assert data == {"i": data["i"], "s0": 1, "s1": 1, "s2": 1}
        finally:
            await nc.close()


async def test_poison_results_do_not_block_the_others(infra: Infra) -> None:
    """Undecodable bodies, a tenant that does not exist, a bad subject and a result naming no job
    are dropped (or never consumed) while the other instances complete."""
    async with stack_for(infra) as stack:
        nc = await nats.connect(infra.nats.url)
        js = nc.jetstream()
        try:
            await stack.worker()
            stack.load.fire(30)
            poison = [
                (f"wf.results.{stack.tenant}", b"\xff not json"),
                (f"wf.results.{stack.tenant}", b'{"job_id": 1}'),
                (f"wf.results.{stack.tenant}.extra", b"{}"),
                ("wf.results.NOT_A_TENANT", b"{}"),
                ("wf.results.fk_nobody_here", msgspec.json.encode(completed_for("nope"))),
                (f"wf.results.{stack.tenant}", msgspec.json.encode(completed_for("job-that-never-was"))),
            ]
            for _ in range(5):
                for subject, body in poison:
                    await js.publish(subject, body)
            books = await account(stack)
            assert_books(books, label="poison results")
            assert books.started == 30
        finally:
            await nc.close()


def completed_for(job_id: str) -> JobResult:
    return JobResult(job_id=job_id, attempt=1, status="completed", output={"poison": True})


async def test_a_result_too_large_for_the_context_fails_its_step_and_blocks_nothing(infra: Infra) -> None:
    """Outputs of 400 kB per step: the third would grow the context past 1 MiB
    (ORCHESTRATOR_MAX_CONTEXT_BYTES), so that step fails with an incident instead of being stored
    or redelivered forever, and the other instances complete meanwhile."""

    async def bulky(job: JobMessage) -> JobResult:
        if job.input.get("i", 0) != 0:
            return completed(job)
        return JobResult(
            job_id=job.job_id, attempt=job.attempt, status="completed", output={job.step: "x" * 400_000}
        )

    async with stack_for(infra) as stack:
        await stack.worker(policy=bulky)
        ids = await stack.load.burst(10)
        books = await account(stack, expect="completed", check_data=False)
        assert books.wrong_outcome == [f"{ids[0]}: failed"], books.wrong_outcome
        books.wrong_outcome = []
        assert_books(books, label="result too large for the context")
        async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=10) as client:
            body = (await client.get(f"/v1/instances/{ids[0]}", headers=stack.headers)).json()
        assert len(msgspec.json.encode(body["data"])) <= 1_048_576
        assert body["incidents"] and body["incidents"][0]["step"] == "s2", body["incidents"]


async def test_max_deliver_exhausted_becomes_an_incident(infra: Infra) -> None:
    """A job no worker ever answers: each attempt passes its deadline (enforced from the database,
    no JetStream advisory involved), and when attempts run out the instance fails with an incident."""

    async def hang(job: JobMessage) -> None:
        return None

    async with stack_for(infra) as stack:
        await stack.register(
            chain_definition(retry={"max_attempts": 2, "initial_interval": 0.1}, timeout=1.0)
            | {"version": "1.0.1"}
        )
        await stack.worker(policy=hang)
        ids = await stack.load.burst(5)
        books = await account(stack, expect="failed", redispatch_allowed=True, timeout=60)
        assert_books(books, label="max attempts exhausted")
        async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=10) as client:
            body = (await client.get(f"/v1/instances/{ids[0]}", headers=stack.headers)).json()
            history = (await client.get(f"/v1/instances/{ids[0]}/history", headers=stack.headers)).json()
        assert body["incidents"] and body["incidents"][0]["step"] == "s0", body
        assert [a["outcome"] for a in history["attempts"]] == ["timed_out", "timed_out"]


async def test_connections_cut_every_3_seconds(infra: Infra) -> None:
    async with stack_for(infra) as stack:
        await stack.worker()
        # Three cuts here; `make test-chaos` cuts every 3 s for a whole minute.
        await cut_every(infra, stack, period=3.0, seconds=9.0, rate=10)
        books = await account(stack)
        assert_books(books, label="connections cut every 3 s")
        assert books.started >= 75
