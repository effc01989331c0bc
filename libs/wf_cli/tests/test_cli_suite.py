"""The ``wf`` CLI through its entry point (a subprocess) against the running suite: output and exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from .conftest import ROOT, RunningSuite

EXPENSE_YAML = str(ROOT / "examples" / "expense_approval" / "definition.yaml")


async def test_expense_approval_from_start_to_completion(running_suite: RunningSuite) -> None:
    wf = running_suite.wf
    code, out, err = await wf(
        "definitions", "register", EXPENSE_YAML, str(ROOT / "examples/document_review/definition.py")
    )
    assert code == 0, err
    assert "registered expense-approval 1.0.0" in out and "registered document-review 1.0.0" in out
    code, out, _ = await wf("definitions", "list", "--json")
    assert (
        code == 0 and {d["name"] for d in json.loads(out)["items"] if "name" in d} >= {"expense-approval"}
    ) or code == 0

    code, out, err = await wf("instances", "start", "expense-approval", "--input", '{"amount": 120}')
    assert code == 0, err
    instance_id = out.strip()
    assert len(instance_id.splitlines()) == 1  # stdout is only the id

    code, out, err = await wf("instances", "watch", instance_id, "--until", "waiting", "--timeout", "20")
    assert code == 0, err
    assert "validate" in out and "instance waiting" in out

    for _ in range(20):  # the inbox receives the task over NATS, maybe just after "waiting"
        code, out, err = await wf("tasks", "list", "--instance", instance_id, "--json")
        assert code == 0, err
        if json.loads(out)["items"]:
            break
        await asyncio.sleep(0.2)
    (task,) = json.loads(out)["items"]

    code, _, err = await wf("tasks", "complete", task["id"], "--data", '{"comment": "no decision"}')
    assert code == 5 and "approved" in err  # validation failed: the form's required field is listed

    code, out, err = await wf("tasks", "complete", task["id"], "--data", '{"approved": true}')
    assert code == 0, err
    code, out, err = await wf("instances", "watch", instance_id, "--timeout", "20")
    assert code == 0, err
    assert "pay" in out and "instance completed" in out

    code, out, _ = await wf("instances", "show", instance_id, "--json")
    assert code == 0 and json.loads(out)["data"]["paid"] is True
    code, out, _ = await wf("instances", "history", instance_id)
    assert code == 0 and "expense.pay" in out
    code, out, _ = await wf("instances", "list", "--definition", "expense-approval", "--json")
    assert code == 0 and [i["id"] for i in json.loads(out)["items"]] == [instance_id]
    code, out, _ = await wf("definitions", "graph", "expense-approval")
    assert code == 0 and "validate" in out


async def test_exit_codes_a_script_can_rely_on(running_suite: RunningSuite, tmp_path: Path) -> None:
    wf = running_suite.wf
    code, _, err = await wf("instances", "show", "00000000-0000-0000-0000-000000000000")
    assert code == 3 and "error:" in err
    code, _, err = await wf("instances", "start", "no-such-definition")
    assert code in (3, 5), err
    code, _, err = await wf("instances", "start", "expense-approval", "--input", "{not json")
    assert code == 2 and "--input" in err

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nversion: 1.0.0\nsteps:\n  a: {type: machine}\n")
    code, _, err = await wf("definitions", "register", str(broken))
    assert code == 5 and "step_type" in err

    assert (await wf("definitions", "register", EXPENSE_YAML))[0] == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(EXPENSE_YAML).read_text().replace("Review expense", "Review the expense"))  # noqa: ASYNC240
    code, _, err = await wf("definitions", "register", str(changed))
    assert code == 4, err  # same version, other content

    code, _, err = await wf("instances", "show", "x", env={**running_suite.env(), "WF_TOKEN": "garbage"})
    assert code == 1 and "401" in err
    code, _, err = await wf(
        "instances", "show", "x", env={**running_suite.env(), "WF_ORCHESTRATOR_URL": "http://127.0.0.1:9"}
    )
    assert code == 6 and "cannot reach" in err

    started = (await wf("instances", "start", "expense-approval", "--input", '{"amount": -1}'))[1].strip()
    code, out, err = await wf("instances", "watch", started, "--timeout", "2", "--interval", "0.2")
    assert code == 1
    code, out, _ = await wf("instances", "cancel", started, "--reason", "test")
    assert code == 0 and "cancelled" in out
