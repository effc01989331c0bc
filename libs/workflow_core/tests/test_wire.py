"""The wire format: lossless round trip, YAML, and the published JSON Schema kept in sync."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflow_core import (
    BaseHumanStep,
    BaseMachineStep,
    ConditionalGroup,
    Edge,
    ExclusiveGateway,
    ParallelGroup,
    RetryPolicy,
    SequentialGroup,
    TimerStep,
    WaitForSignalStep,
    WorkflowDefinition,
    load_definition,
)
from workflow_core.wire import wire_json_schema

SCHEMA_FILE = Path(__file__).parents[1] / "schema" / "definition.schema.json"


class Validate(BaseMachineStep):
    name = "validate"
    step_type = "expenses.validate"
    retry = RetryPolicy(max_attempts=5, backoff="fixed", initial_interval=3)
    timeout = 60


class Review(BaseHumanStep):
    name = "review"
    title = "Review the expense"
    form_schema = {
        "type": "object",
        "properties": {"approved": {"type": "boolean"}},
        "required": ["approved"],
    }
    candidate_groups = ("finance",)
    due_in = 3600
    priority = 70


def rich_definition() -> WorkflowDefinition:
    return WorkflowDefinition(
        "expense",
        "1.2.0",
        "everything at once",
        steps={
            "validate": Validate,
            "review": Review,
            "decide": ExclusiveGateway(name="decide"),
            "pay": SequentialGroup(
                name="pay",
                steps=[
                    Validate(name="check"),
                    ParallelGroup(name="both", steps=[Validate(name="x"), Validate(name="y")]),
                ],
            ),
            "notify": ConditionalGroup(
                name="notify", branches=[("amount > 10", Validate(name="mail"))], default=Validate(name="sms")
            ),
            "wait": TimerStep(name="wait", duration=5),
            "signal": WaitForSignalStep(name="signal", signal="paid.ok"),
        },
        edges=[
            Edge(Validate, Review),
            Edge("review", "decide"),
            Edge("decide", "pay", condition="approved == true"),
            Edge("decide", "notify", default=True),
            Edge("pay", "wait"),
            Edge("wait", "signal"),
        ],
    )


def test_round_trip_is_lossless() -> None:
    original = rich_definition().to_wire()
    again = WorkflowDefinition.from_wire(original).to_wire()
    assert again == original
    assert json.loads(json.dumps(original)) == original


def test_a_machine_step_becomes_its_routing_key_on_the_wire() -> None:
    wire = rich_definition().to_wire()
    assert wire["steps"]["validate"]["type"] == "machine"
    assert wire["steps"]["validate"]["step_type"] == "expenses.validate"
    assert wire["steps"]["validate"]["retry"] == {
        "max_attempts": 5,
        "backoff": "fixed",
        "initial_interval": 3.0,
    }


def test_yaml_and_json_give_the_same_definition() -> None:
    import yaml

    wire = rich_definition().to_wire()
    from_yaml = load_definition(yaml.safe_dump(wire))
    from_json = load_definition(json.dumps(wire))
    assert from_yaml.to_wire() == from_json.to_wire() == wire
    assert from_yaml.digest == from_json.digest


def test_yaml_version_strings_are_not_turned_into_numbers_or_dates() -> None:
    text = """
name: tiny
version: 1.0.0
steps:
  a: {type: machine, step_type: a.b}
"""
    assert load_definition(text).version == "1.0.0"


def test_the_published_json_schema_is_in_sync_with_the_models() -> None:
    assert SCHEMA_FILE.exists(), "run: uv run python -m workflow_core.schema_file"
    assert json.loads(SCHEMA_FILE.read_text()) == wire_json_schema()


def test_the_json_schema_accepts_what_to_wire_produces() -> None:
    import jsonschema

    jsonschema.Draft202012Validator(wire_json_schema()).validate(rich_definition().to_wire())


@pytest.mark.parametrize(
    "bad", [{"name": "x"}, {"name": "x", "version": "1.0.0", "steps": {"a": {"type": "teleport"}}}]
)
def test_the_json_schema_rejects_bad_wire(bad: dict[str, object]) -> None:
    import jsonschema

    assert list(jsonschema.Draft202012Validator(wire_json_schema()).iter_errors(bad))


def test_python_and_yaml_forms_of_one_definition_have_one_digest() -> None:
    class Integral(BaseMachineStep):
        name = "integral"
        retry = RetryPolicy(initial_interval=1, max_interval=60)  # ints where the wire has floats
        timeout = 30

    from_python = WorkflowDefinition("digest", "1.0.0", steps={"a": Integral})
    from_yaml = load_definition(
        "name: digest\nversion: 1.0.0\nsteps:\n  a: {type: machine, step_type: integral, name: integral,"
        " timeout: 30, retry: {initial_interval: 1, max_interval: 60}}\n"
    )
    assert from_python.to_wire() == from_yaml.to_wire()
    assert from_python.digest == from_yaml.digest


def test_wrong_types_in_python_steps_are_validation_errors_not_crashes() -> None:
    from workflow_core import BaseHumanStep, DefinitionInvalidError

    class Bad(BaseHumanStep):
        name = "bad"
        title = "T"
        priority = "high"  # type: ignore[assignment]

    with pytest.raises(DefinitionInvalidError) as caught:
        WorkflowDefinition("bad", "1.0.0", steps={"b": Bad})
    assert any("priority" in e.path for e in caught.value.errors)
