"""Every example runs to completion end to end (registry, orchestrator, inbox, the example worker),
and its YAML and Python forms are the same definition."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest

from wf_client import WorkflowClient
from workflow_core import load_definition

from .conftest import ROOT, RunningSuite

EXAMPLES = ("expense_approval", "order_fulfilment", "document_review")


@pytest.mark.parametrize("example", EXAMPLES)
def test_yaml_and_python_forms_are_the_same_definition(example: str) -> None:
    from_yaml = load_definition((ROOT / "examples" / example / "definition.yaml").read_text())
    from_python = importlib.import_module(f"examples.{example}.definition").definition
    assert from_yaml.to_wire() == from_python.to_wire()
    assert from_yaml.digest == from_python.digest


def test_the_example_worker_serves_every_machine_step_of_the_examples() -> None:
    from examples.worker import steps

    served = {step.step_type for step in steps}
    needed = set()
    for example in EXAMPLES:
        wire = load_definition(Path(ROOT / "examples" / example / "definition.yaml").read_text()).to_wire()
        needed |= {s["step_type"] for s in wire["steps"].values() if s["type"] == "machine"}
    assert served == needed


async def _human_review(client: WorkflowClient, instance_id: str, *, approved: bool) -> None:
    await client.wait(instance_id, until={"waiting"}, timeout=20)
    for _ in range(100):  # the inbox receives the task over NATS
        page = await client.list_tasks(instance_id=instance_id)
        if page["items"]:
            break
        await asyncio.sleep(0.1)
    (task,) = page["items"]
    assert task["candidate_groups"] == ["finance"] and task["title"] == "Review expense"
    await client.claim(task["id"])
    await client.complete(task["id"], {"approved": approved, "comment": "ok" if approved else "too much"})


async def test_every_example_runs_to_completion(running_suite: RunningSuite) -> None:
    async with running_suite.client() as client:
        for example in EXAMPLES:
            await client.register(ROOT / "examples" / example / "definition.yaml")
        approved = await client.start("expense-approval", input={"amount": 120})
        rejected = await client.start("expense-approval", input={"amount": 40})
        order = await client.start(
            "order-fulfilment", input={"items": ["book", "pen"], "total": 30}, business_key="order-1"
        )
        document = await client.start("document-review", input={"title": "Design", "required_revisions": 3})

        await _human_review(client, approved["id"], approved=True)
        await _human_review(client, rejected["id"], approved=False)

        done = await client.wait(approved["id"], timeout=30)
        assert done["status"] == "completed", done
        assert done["data"]["paid"] is True and done["data"]["band"] == "large"
        assert done["data"]["payment_id"].startswith("pay-") and "notified" not in done["data"]

        done = await client.wait(rejected["id"], timeout=30)
        assert done["status"] == "completed", done
        assert done["data"]["notified"] is True and "paid" not in done["data"]
        assert "too much" in done["data"]["notice"]

        done = await client.wait(order["id"], timeout=30)
        assert done["status"] == "completed", done
        assert done["data"]["reserved"] == 2 and done["data"]["charged"] == 30
        assert done["data"]["shipped"] is True and done["data"]["delivered"] is True
        history = await client.history(order["id"])
        charges = [a for a in history["attempts"] if a["step"] == "charge_card"]
        assert [a["outcome"] for a in charges][:1] == ["failed"] and charges[-1]["outcome"] == "completed"

        done = await client.wait(document["id"], timeout=30)
        assert done["status"] == "completed", done
        assert done["data"]["revision"] == 3 and done["data"]["published"] is True


async def test_an_invalid_expense_fails_for_good(running_suite: RunningSuite) -> None:
    async with running_suite.client() as client:
        await client.register(ROOT / "examples" / "expense_approval" / "definition.yaml")
        started = await client.start("expense-approval", input={"amount": -5})
        for _ in range(200):
            instance = await client.get_instance(started["id"])
            if instance["incidents"] or instance["status"] == "failed":
                break
            await asyncio.sleep(0.1)
        history = await client.history(started["id"])
        (attempt,) = history["attempts"]  # not retried: the error is final
        assert attempt["outcome"] == "failed" and attempt["error"]["type"] == "InvalidAmount"
        assert attempt["error"]["retryable"] is False
