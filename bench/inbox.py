"""W4: the human task lifecycle against the task inbox, with many open tasks in the tenant.

1. One real lifecycle provisions the tenant in the orchestrator and the inbox.
2. ``--open-tasks`` open tasks (100,000 by default) are seeded straight into the tenant's ``tasks``
   table with one ``INSERT ... SELECT generate_series`` (the state the inbox is measured in, not
   what is measured), candidate group ``reviewers``, then ``ANALYZE``.
3. Lifecycle, closed loop: each client starts an instance of ``bench_w4`` (one human step),
   polls ``GET /v1/tasks?instance_id=`` until its task is there (create), reads the inbox's first
   page as a reviewer sees it (``GET /v1/tasks?limit=50``: every open task is visible), claims,
   completes, and waits for ``instance.completed``. Each operation's latency is recorded.
4. Inbox page: closed loop of ``GET /v1/tasks?limit=50`` pages only (first page, then following
   the ``next_cursor`` a few pages deep): phase ``list`` with eight clients (throughput), then
   phase ``list-1`` with one (a person paging: the p99 target's number).
"""

# ruff: noqa: S608

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench.common import make_result, summarize_latencies
from wf_platform.tenancy import TenantId, tenant_schema
from wf_platform.testing import bearer

PAGE = 50


async def seed(stack: Any, count: int) -> float:
    """Insert ``count`` open tasks; seconds taken."""
    schema = tenant_schema(TenantId(stack.tenant))
    began = time.perf_counter()
    conn = await asyncpg.connect(stack.pg.url_for("wf_inbox"))
    try:
        await conn.execute(
            f"""
            INSERT INTO "{schema}".tasks (id, instance_id, definition_name, definition_version, step,
                title, description, candidate_groups, priority, due_sort, status, created_at)
            SELECT gen_random_uuid(), gen_random_uuid()::text, 'bench_seeded', '1.0.0', 'review',
                'Seeded review ' || g, 'seeded for W4', ARRAY['reviewers'], (g % 100),
                'infinity'::timestamptz, 'open', now() - make_interval(secs => g)
            FROM generate_series(1, $1::int) AS g
            """,
            count,
        )
        await conn.execute(f'ANALYZE "{schema}".tasks')
        total = await conn.fetchval(f"SELECT count(*) FROM \"{schema}\".tasks WHERE status = 'open'")
    finally:
        await conn.close()
    del total
    return time.perf_counter() - began


async def inbox_benchmark(stack: Any, driver: Any, args: Any) -> list[dict[str, Any]]:
    import httpx

    from bench.common import ProcessSampler

    # A reviewer, not an admin: the inbox filters by visibility (candidate group "reviewers").
    headers = bearer(
        stack.keys.token(
            tenant=stack.tenant, sub="reviewer-1", roles=("tasks:work",), groups=("reviewers",), ttl=86400
        )
    )
    async with httpx.AsyncClient(base_url=stack.inbox.url, timeout=60) as inbox:

        async def lifecycle(ops: dict[str, list[float]] | None) -> bool:
            t0 = time.perf_counter()
            instance_id = await driver.start("bench_w4")
            waiter = asyncio.get_running_loop().create_future()
            driver._waiters[instance_id] = waiter
            task_id = None
            for _ in range(2000):
                page = await inbox.get("/v1/tasks", params={"instance_id": instance_id}, headers=headers)
                page.raise_for_status()
                items = page.json()["items"]
                if items:
                    task_id = items[0]["id"]
                    break
                await asyncio.sleep(0.005)
            if task_id is None:
                raise RuntimeError("task never reached the inbox")
            t1 = time.perf_counter()
            (await inbox.get("/v1/tasks", params={"limit": PAGE}, headers=headers)).raise_for_status()
            t2 = time.perf_counter()
            (await inbox.post(f"/v1/tasks/{task_id}/claim", headers=headers)).raise_for_status()
            t3 = time.perf_counter()
            done = await inbox.post(
                f"/v1/tasks/{task_id}/complete", json={"data": {"approved": True}}, headers=headers
            )
            done.raise_for_status()
            t4 = time.perf_counter()
            early = driver._done.pop(instance_id, None)
            if early is not None:
                driver._waiters.pop(instance_id, None)
                t5, status = early
            else:
                t5, status = await asyncio.wait_for(waiter, timeout=60)
            if ops is not None:
                for key, value in (("create", t1 - t0), ("list", t2 - t1), ("claim", t3 - t2),
                                   ("complete", t4 - t3), ("resume", t5 - t4)):  # fmt: skip
                    ops[key].append(value)
            return status == "completed"

        from bench.common import closed_loop

        await lifecycle(None)  # provisions the tenant in the inbox
        seconds = await seed(stack, args.open_tasks)
        clients = max(1, min(args.clients, 16))
        await closed_loop(lambda: lifecycle(None), clients=clients, duration=args.warmup)
        ops: dict[str, list[float]] = {k: [] for k in ("create", "list", "claim", "complete", "resume")}
        sampler = ProcessSampler(stack.process_groups()).start()
        latencies, failed, errors = await closed_loop(
            lambda: lifecycle(ops), clients=clients, duration=args.duration
        )
        processes = sampler.stop()
        rows = [
            make_result(
                system="suite",
                shape="W4",
                phase="cycle",
                clients=clients,
                duration=args.duration,
                latencies=latencies,
                failed=failed,
                steps=1,
                processes=processes,
                extra={
                    "errors": errors,
                    "open_tasks": args.open_tasks,
                    "seed_seconds": round(seconds, 1),
                    "operations_ms": {k: summarize_latencies(v) for k, v in ops.items()},
                    "machine": sampler.machine,
                },
            ).to_json()
        ]

        async def page() -> bool:
            cursor = None
            for _ in range(3):
                params: dict[str, Any] = {"limit": PAGE}
                if cursor:
                    params["cursor"] = cursor
                started = time.perf_counter()
                response = await inbox.get("/v1/tasks", params=params, headers=headers)
                response.raise_for_status()
                pages.append(time.perf_counter() - started)
                cursor = response.json().get("next_cursor")
            return True

        # Two phases: eight clients paging as fast as they can (throughput; their latency is mostly
        # queueing on this 2-core machine), then one person paging (the response time a user sees,
        # which the p99 target is read on).
        for phase, clients in (("list", 8), ("list-1", 1)):
            pages: list[float] = []
            sampler = ProcessSampler(stack.process_groups()).start()
            _, failed, errors = await closed_loop(page, clients=clients, duration=max(args.duration / 2, 2))
            processes = sampler.stop()
            rows.append(
                make_result(
                    system="suite",
                    shape="W4",
                    phase=phase,
                    clients=clients,
                    duration=max(args.duration / 2, 2),
                    latencies=pages,
                    failed=failed,
                    steps=1,
                    processes=processes,
                    extra={
                        "errors": errors,
                        "open_tasks": args.open_tasks,
                        "page_size": PAGE,
                        "what": "GET /v1/tasks page (instances_per_s = three-page walks/s)",
                        "machine": sampler.machine,
                    },
                ).to_json()
            )
    return rows
