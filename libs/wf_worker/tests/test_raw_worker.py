"""``examples/raw_worker.py``: the language-neutral worker (plain nats-py and JSON) keeps the contract."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .conftest import Bus

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # ``examples`` is importable from the repository root
    sys.path.insert(0, str(ROOT))


def test_the_raw_worker_stays_under_60_lines() -> None:
    assert len((ROOT / "examples" / "raw_worker.py").read_text().splitlines()) < 60


async def test_the_raw_worker_reports_results_then_acks(bus: Bus) -> None:
    stop = asyncio.Event()
    url = bus.nc.connected_url.geturl()
    from examples import raw_worker

    task = asyncio.get_running_loop().create_task(raw_worker.main("raw.double", url, bus.tenant, stop))
    try:
        ok = await bus.job(
            "raw.double", {"value": 21}, headers={"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}
        )
        bad = await bus.job("raw.double", {"nothing": True})
        results = {r.job_id: (r, h) for r, h in await bus.results(2)}
        result, headers = results[ok.job_id]
        assert result.status == "completed" and result.output == {"doubled": 42}
        assert headers["Nats-Msg-Id"] == f"result:{ok.job_id}:1"
        assert headers["traceparent"].startswith("00-" + "ab" * 16)
        failed, _ = results[bad.job_id]
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.type == "KeyError" and failed.error.retryable is True
        await asyncio.sleep(0.2)
        assert await bus.pending_jobs() == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
