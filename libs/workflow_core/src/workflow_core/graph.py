"""The executable graph: a definition with its groups expanded into plain nodes and edges.

Groups become nodes of their own plus synthetic ones, so the engine only knows plain nodes:

- a sequential group ``g`` is a pass node ``g`` → its members in order;
- a parallel group ``g`` is a parallel gateway ``g`` → every member → a join ``g/#join``;
- a conditional group ``g`` is an exclusive gateway ``g`` → each branch (its condition; the
  default branch as the default edge) → a join ``g/#join``.

A member's id is ``<group id>/<member name>``; edges to a group enter at ``g``, edges out of a
group leave from its exit (the last member of a sequential group, else ``g/#join``). Reachability
between nodes is precomputed: the engine uses it to let a join wait only for tokens that can still
reach it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from workflow_core.models import StepKind
from workflow_core.wire import (
    ConditionalGroupSpec,
    DefinitionSpec,
    ExclusiveGatewaySpec,
    HumanStepSpec,
    InclusiveGatewaySpec,
    MachineStepSpec,
    NodeSpec,
    ParallelGatewaySpec,
    ParallelGroupSpec,
    SequentialGroupSpec,
    SignalStepSpec,
    TimerStepSpec,
)

__all__ = [
    "CompiledGraph",
    "GraphEdge",
    "GraphNode",
    "compile_graph",
    "definition_graph",
    "strongly_connected",
]

_KINDS: dict[type, StepKind] = {
    MachineStepSpec: StepKind.MACHINE,
    HumanStepSpec: StepKind.HUMAN,
    ExclusiveGatewaySpec: StepKind.EXCLUSIVE_GATEWAY,
    ParallelGatewaySpec: StepKind.PARALLEL_GATEWAY,
    InclusiveGatewaySpec: StepKind.INCLUSIVE_GATEWAY,
    TimerStepSpec: StepKind.TIMER,
    SignalStepSpec: StepKind.SIGNAL,
}


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A plain node of the expanded graph."""

    id: str
    kind: StepKind
    spec: NodeSpec | None
    """The wire node (``None`` for a synthetic join)."""
    label: str
    max_visits: int | None = None
    group: str | None = None
    """The innermost group this node belongs to."""


@dataclass(frozen=True, slots=True)
class GraphEdge:
    """An edge of the expanded graph; ``index`` keeps the definition's order for exclusive choices."""

    source: str
    target: str
    condition: str | None = None
    default: bool = False
    on_error: bool = False
    index: int = 0


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """Where a group sits in the expanded graph."""

    id: str
    kind: str
    entry: str
    exit: str
    members: tuple[str, ...]


@dataclass(slots=True)
class CompiledGraph:
    """Nodes, edges and reachability of one definition, ready for the engine."""

    nodes: dict[str, GraphNode] = field(default_factory=dict[str, GraphNode])
    outgoing: dict[str, list[GraphEdge]] = field(default_factory=dict[str, list[GraphEdge]])
    incoming: dict[str, list[GraphEdge]] = field(default_factory=dict[str, list[GraphEdge]])
    groups: dict[str, GroupInfo] = field(default_factory=dict[str, GroupInfo])
    start: list[str] = field(default_factory=list[str])
    reach: dict[str, frozenset[str]] = field(default_factory=dict[str, frozenset[str]])
    """For every node, the nodes reachable from it through one or more edges."""

    def add_edge(self, edge: GraphEdge) -> None:
        """Add an edge (both ends must exist)."""
        self.outgoing.setdefault(edge.source, []).append(edge)
        self.incoming.setdefault(edge.target, []).append(edge)

    def is_join(self, node: str) -> bool:
        """A node with several incoming edges waits for every token that can still reach it."""
        return len(self.incoming.get(node, ())) > 1


def compile_graph(spec: DefinitionSpec) -> CompiledGraph:
    """Expand groups and precompute reachability.

    Edges naming unknown steps are skipped: validation reports them.
    """
    graph = CompiledGraph()
    bounds: dict[str, tuple[str, str]] = {}
    for key, node in spec.steps.items():
        bounds[key] = _expand(graph, key, node, None)
    for index, edge in enumerate(spec.edges):
        if edge.source not in bounds or edge.target not in bounds:
            continue
        graph.add_edge(
            GraphEdge(
                source=bounds[edge.source][1],
                target=bounds[edge.target][0],
                condition=edge.condition,
                default=edge.default,
                on_error=edge.on_error,
                index=index,
            )
        )
    if spec.start is not None:
        graph.start = [bounds[s][0] for s in spec.start if s in bounds]
    else:
        targets = {e.target for e in spec.edges}
        graph.start = [bounds[key][0] for key in spec.steps if key not in targets]
    graph.reach = _reachability(graph)
    return graph


def _expand(graph: CompiledGraph, node_id: str, node: NodeSpec, group: str | None) -> tuple[str, str]:
    """Add ``node`` (recursively for groups); return its (entry, exit) ids."""
    label = node.name or node_id.rsplit("/", 1)[-1]
    kind = _KINDS.get(type(node))
    if kind is not None:
        graph.nodes[node_id] = GraphNode(node_id, kind, node, label, node.max_visits, group)
        return node_id, node_id
    if isinstance(node, SequentialGroupSpec):
        graph.nodes[node_id] = GraphNode(node_id, StepKind.PASS, node, label, node.max_visits, group)
        previous = node_id
        members: list[str] = []
        for member in node.steps:
            member_id = f"{node_id}/{member.name or ''}"
            entry, exit_ = _expand(graph, member_id, member, node_id)
            graph.add_edge(GraphEdge(source=previous, target=entry))
            previous = exit_
            members.append(member_id)
        graph.groups[node_id] = GroupInfo(node_id, "sequential", node_id, previous, tuple(members))
        return node_id, previous
    join = f"{node_id}/#join"
    if isinstance(node, ParallelGroupSpec):
        graph.nodes[node_id] = GraphNode(
            node_id, StepKind.PARALLEL_GATEWAY, node, label, node.max_visits, group
        )
        graph.nodes[join] = GraphNode(join, StepKind.PASS, None, f"{label} joined", None, node_id)
        members = []
        for member in node.steps:
            member_id = f"{node_id}/{member.name or ''}"
            entry, exit_ = _expand(graph, member_id, member, node_id)
            graph.add_edge(GraphEdge(source=node_id, target=entry))
            graph.add_edge(GraphEdge(source=exit_, target=join))
            members.append(member_id)
        graph.groups[node_id] = GroupInfo(node_id, "parallel", node_id, join, tuple(members))
        return node_id, join
    assert isinstance(node, ConditionalGroupSpec)
    graph.nodes[node_id] = GraphNode(node_id, StepKind.EXCLUSIVE_GATEWAY, node, label, node.max_visits, group)
    graph.nodes[join] = GraphNode(join, StepKind.PASS, None, f"{label} joined", None, node_id)
    members = []
    branches: list[tuple[str | None, NodeSpec]] = [(b.condition, b.step) for b in node.branches]
    if node.default is not None:
        branches.append((None, node.default))
    for index, (condition, member) in enumerate(branches):
        member_id = f"{node_id}/{member.name or ''}"
        entry, exit_ = _expand(graph, member_id, member, node_id)
        graph.add_edge(
            GraphEdge(
                source=node_id, target=entry, condition=condition, default=condition is None, index=index
            )
        )
        graph.add_edge(GraphEdge(source=exit_, target=join))
        members.append(member_id)
    graph.groups[node_id] = GroupInfo(node_id, "conditional", node_id, join, tuple(members))
    return node_id, join


def _reachability(graph: CompiledGraph) -> dict[str, frozenset[str]]:
    successors = {n: [e.target for e in graph.outgoing.get(n, ())] for n in graph.nodes}
    reach: dict[str, frozenset[str]] = {}
    for origin in graph.nodes:
        seen: set[str] = set()
        stack = list(successors[origin])
        while stack:
            current = stack.pop()
            if current in seen or current not in successors:
                continue
            seen.add(current)
            stack.extend(successors[current])
        reach[origin] = frozenset(seen)
    return reach


def strongly_connected(nodes: Iterable[str], successors: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), in reverse topological order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = successors.get(node, [])
            if child < len(children):
                work.append((node, child + 1))
                nxt = children[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def definition_graph(definition: Any) -> dict[str, Any]:
    """A JSON view of a definition's expanded graph: ``{"nodes": [...], "edges": [...], "groups": [...]}``."""
    graph: CompiledGraph = definition.graph
    return {
        "nodes": [
            {"id": n.id, "kind": n.kind.value, "label": n.label, "group": n.group, "max_visits": n.max_visits}
            for n in graph.nodes.values()
        ],
        "edges": [
            {
                "source": e.source,
                "target": e.target,
                "condition": e.condition,
                "default": e.default,
                "on_error": e.on_error,
            }
            for edges in graph.outgoing.values()
            for e in edges
        ],
        "groups": [
            {"id": g.id, "kind": g.kind, "entry": g.entry, "exit": g.exit, "members": list(g.members)}
            for g in graph.groups.values()
        ],
        "start": list(graph.start),
    }
