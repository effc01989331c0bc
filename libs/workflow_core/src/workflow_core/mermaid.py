"""Mermaid flowcharts of a definition, and of an instance with its state.

Groups are drawn as subgraphs; conditions label their edges; an instance's completed, active and
failed steps get classes (green, blue, red).
"""

from __future__ import annotations

import re
from typing import Any

from workflow_core.graph import CompiledGraph, GraphNode
from workflow_core.models import InstanceState, StepKind, StepStatus

__all__ = ["definition_to_mermaid", "instance_to_mermaid"]

_SHAPES: dict[StepKind, tuple[str, str]] = {
    StepKind.MACHINE: ("[", "]"),
    StepKind.HUMAN: ("[/", "/]"),
    StepKind.EXCLUSIVE_GATEWAY: ("{", "}"),
    StepKind.PARALLEL_GATEWAY: ("{", "}"),
    StepKind.INCLUSIVE_GATEWAY: ("{", "}"),
    StepKind.TIMER: ("([", "])"),
    StepKind.SIGNAL: (">", "]"),
    StepKind.PASS: ("((", "))"),
}
_GATEWAY_MARK = {
    StepKind.EXCLUSIVE_GATEWAY: "X ",
    StepKind.PARALLEL_GATEWAY: "+ ",
    StepKind.INCLUSIVE_GATEWAY: "O ",
}


def _mid(node_id: str) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", node_id)


def _text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", " ")


def _node_line(node: GraphNode) -> str:
    left, right = _SHAPES[node.kind]
    label = node.label if node.kind is not StepKind.PASS else " "
    if node.kind is StepKind.PASS and node.spec is not None:
        label = node.label
        left, right = "[[", "]]"
    return f'{_mid(node.id)}{left}"{_GATEWAY_MARK.get(node.kind, "")}{_text(label)}"{right}'


def definition_to_mermaid(definition: Any) -> str:
    """A Mermaid ``flowchart TD`` of the definition (groups as subgraphs)."""
    return _render(definition.graph, None)


def instance_to_mermaid(definition: Any, state: InstanceState) -> str:
    """The definition's flowchart with the instance's completed, active and failed steps marked."""
    return _render(definition.graph, state)


def _render(graph: CompiledGraph, state: InstanceState | None) -> str:
    lines = ["flowchart TD"]
    children: dict[str | None, list[GraphNode]] = {}
    for node in graph.nodes.values():
        children.setdefault(node.group, []).append(node)

    def emit(group: str | None, indent: str) -> None:
        for node in children.get(group, []):
            if node.id in graph.groups:
                info = graph.groups[node.id]
                lines.append(f'{indent}subgraph {_mid(node.id)}_group["{_text(node.label)} ({info.kind})"]')
                lines.append(f"{indent}  {_node_line(node)}")
                emit(node.id, indent + "  ")
                lines.append(f"{indent}end")
            else:
                lines.append(f"{indent}{_node_line(node)}")

    emit(None, "  ")
    for edges in graph.outgoing.values():
        for edge in edges:
            label = edge.condition or ("default" if edge.default else "")
            if edge.on_error:
                label = "on error" + (f": {label}" if label else "")
            arrow = f'-- "{_text(label)}" -->' if label else "-->"
            style = "-.->" if edge.on_error and not label else arrow
            lines.append(f"  {_mid(edge.source)} {style} {_mid(edge.target)}")
    if state is not None:
        lines.extend(_state_classes(graph, state))
    return "\n".join(lines) + "\n"


def _state_classes(graph: CompiledGraph, state: InstanceState) -> list[str]:
    done = {r.node for r in state.history if r.status is StepStatus.COMPLETED}
    failed = {a.node for a in state.activations if a.status is StepStatus.INCIDENT}
    active = {a.node for a in state.activations} - failed
    lines = [
        "  classDef completed fill:#d4edda,stroke:#2e7d32",
        "  classDef active fill:#d6e9ff,stroke:#1565c0,stroke-width:3px",
        "  classDef failed fill:#f8d7da,stroke:#c62828,stroke-width:3px",
    ]
    for name, members in (("completed", done - active - failed), ("active", active), ("failed", failed)):
        known = sorted(_mid(n) for n in members if n in graph.nodes)
        if known:
            lines.append(f"  class {','.join(known)} {name}")
    return lines
