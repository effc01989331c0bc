"""Validation collects every problem, each with its path."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_core import DefinitionInvalidError, load_definition


def machine(step_type: str = "a.b", **extra: Any) -> dict[str, Any]:
    return {"type": "machine", "step_type": step_type, **extra}


def wire(steps: dict[str, Any], edges: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "flow", "version": "1.0.0", "steps": steps, "edges": edges or [], **extra}


def errors_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionInvalidError) as caught:
        load_definition(data)
    return [(e.path, e.message) for e in caught.value.errors]


def test_a_valid_definition_loads() -> None:
    definition = load_definition(wire({"a": machine(), "b": machine()}, [{"source": "a", "target": "b"}]))
    assert definition.name == "flow"


@pytest.mark.parametrize(
    "condition",
    ["__import__('os').system('x')", "().__class__", "lambda: 1", "foo(1)", "amount >", "os.system('rm')"],
)
def test_unsafe_or_broken_conditions_are_rejected_at_validation(condition: str) -> None:
    problems = errors_of(
        wire({"a": machine(), "b": machine()}, [{"source": "a", "target": "b", "condition": condition}])
    )
    assert [p for p, _ in problems] == ["edges[0].condition"]


def test_ten_errors_are_all_listed_with_their_paths() -> None:
    data = wire(
        {
            "a": machine("Bad Type"),
            "b": {"type": "human", "title": "x", "form_schema": {"type": "objekt"}},
            "c": {"type": "timer"},
            "d": {"type": "signal", "signal": "a b"},
            "e": machine(),
        },
        [
            {"source": "a", "target": "nowhere"},
            {"source": "ghost", "target": "b"},
            {"source": "a", "target": "e", "condition": "__import__('os')"},
            {"source": "a", "target": "e", "condition": "x > 1", "default": True},
            {"source": "b", "target": "e", "on_error": True},
        ],
        name="Bad Name!",
        version="1.0",
    )
    problems = errors_of(data)
    paths = [p for p, _ in problems]
    assert len(problems) >= 10, problems
    for expected in [
        "name",
        "version",
        "steps.a.step_type",
        "steps.c",
        "steps.d.signal",
        "edges[0].target",
        "edges[1].source",
        "edges[2].condition",
        "edges[3]",
        "edges[4]",
    ]:
        assert expected in paths, (expected, problems)
    assert any(p.startswith("steps.b.form_schema") for p in paths)


def test_structural_errors_name_their_paths() -> None:
    problems = errors_of(
        {
            "name": "x",
            "version": "1.0.0",
            "steps": {
                "a": {"type": "machine"},
                "b": {"type": "rocket"},
                "c": {"type": "human", "title": 5, "colour": "red"},
            },
            "edges": "nope",
        }
    )
    paths = {p for p, _ in problems}
    assert {"steps.a", "steps.b", "steps.c.title", "steps.c", "edges"} <= paths, problems
    assert any("rocket" in m for _, m in problems)
    assert any("colour" in m for _, m in problems)


def test_no_start_step_unreachable_steps_and_unbounded_loops() -> None:
    loop = wire(
        {"a": machine(), "b": machine()}, [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}]
    )
    assert any("no start step" in m for _, m in errors_of(loop))

    unreachable = wire(
        {"a": machine(), "b": machine(), "c": machine(), "d": machine()},
        [{"source": "a", "target": "b"}, {"source": "c", "target": "d"}, {"source": "d", "target": "c"}],
    )
    problems = errors_of(unreachable)
    assert (
        "steps.c",
        "step 'c' is a join that can never fire: each incoming edge comes after it",
    ) in problems or any(p == "steps.c" for p, _ in problems)

    unbounded = wire(
        {"a": machine(), "b": machine(), "c": machine()},
        [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c"},
            {"source": "c", "target": "b", "condition": "again"},
        ],
    )
    assert any("loop without a bound" in m for _, m in errors_of(unbounded))
    bounded = wire(
        {"a": machine(), "b": machine(max_visits=3), "c": machine()},
        [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c"},
            {"source": "c", "target": "b", "condition": "again"},
        ],
    )
    assert load_definition(bounded).name == "flow"


def test_duplicate_names_in_a_group_and_empty_groups() -> None:
    problems = errors_of(
        wire(
            {
                "g": {"type": "parallel_group", "steps": [machine(name="x"), machine(name="x"), machine()]},
                "h": {"type": "sequential_group", "steps": []},
            }
        )
    )
    paths = [p for p, _ in problems]
    assert "steps.g.steps[1].name" in paths
    assert "steps.g.steps[2].name" in paths
    assert "steps.h" in paths


def test_yaml_syntax_error_names_the_line() -> None:
    text = "name: flow\nversion: 1.0.0\nsteps:\n  a: {type: machine, step_type: a.b\n"
    problems = errors_of(text)
    assert len(problems) == 1
    assert "line" in problems[0][1]


def test_yaml_duplicate_keys_are_rejected() -> None:
    text = (
        "name: flow\nversion: 1.0.0\nsteps:\n"
        "  a: {type: machine, step_type: a.b}\n  a: {type: machine, step_type: c.d}\n"
    )
    assert any("duplicate key" in m for _, m in errors_of(text))


def test_size_limit() -> None:
    huge = "x" * (600 * 1024)
    assert any("larger than" in m for _, m in errors_of('{"name": "' + huge + '"}'))


def test_parallel_gateway_edges_take_no_condition_and_only_one_default_per_step() -> None:
    problems = errors_of(
        wire(
            {"p": {"type": "parallel_gateway"}, "a": machine(), "b": machine()},
            [
                {"source": "p", "target": "a", "condition": "x > 1"},
                {"source": "p", "target": "b"},
            ],
        )
    )
    assert [p for p, _ in problems] == ["edges[0]"]
