from __future__ import annotations

from workflow_core import BaseHumanStep, Edge, InstanceStatus, LocalEngine, ParallelGroup, WorkflowDefinition
from workflow_core.graph import definition_graph
from workflow_core.mermaid import definition_to_mermaid, instance_to_mermaid
from workflow_core.testing import RecordingStep as Record


class Ask(BaseHumanStep):
    name = "ask"
    title = "Ask"


def definition() -> WorkflowDefinition:
    return WorkflowDefinition(
        "m",
        "1.0.0",
        steps={
            "a": Record(name="a"),
            "both": ParallelGroup(name="both", steps=[Record(name="l"), Record(name="r")]),
            "ask": Ask,
        },
        edges=[Edge("a", "both", condition="go == true"), Edge("both", "ask")],
    )


def test_definition_flowchart_has_nodes_edges_conditions_and_group_subgraphs() -> None:
    text = definition_to_mermaid(definition())
    assert text.startswith("flowchart TD\n")
    assert 'n_a["a"]' in text
    assert "subgraph n_both_group" in text
    assert "n_both_l" in text and "n_both_r" in text
    assert '-- "go == true" -->' in text
    assert "n_both__join --> n_ask" in text


async def test_instance_flowchart_marks_completed_and_active_steps() -> None:
    engine = LocalEngine()
    instance = await engine.start(definition(), input={"go": True})
    await engine.run_until_idle()
    assert engine.get(instance.id).status is InstanceStatus.WAITING
    text = instance_to_mermaid(definition(), engine.get(instance.id))
    assert "class n_ask active" in text
    completed_line = next(
        line
        for line in text.splitlines()
        if line.strip().startswith("class ") and line.endswith(" completed")
    )
    assert "n_a" in completed_line and "n_both_l" in completed_line


def test_graph_json_lists_expanded_nodes_and_groups() -> None:
    graph = definition_graph(definition())
    ids = {n["id"] for n in graph["nodes"]}
    assert {"a", "both", "both/l", "both/r", "both/#join", "ask"} <= ids
    assert graph["groups"][0]["members"] == ["both/l", "both/r"]
    assert graph["start"] == ["a"]
