"""Validation of definitions: every problem, each with its path, in one pass.

Two layers: :func:`check_wire_structure` checks a raw wire mapping against the published JSON
Schema (types, required fields, unknown fields), and :func:`validate_spec` checks the meaning of a
decoded :class:`~workflow_core.wire.DefinitionSpec`: names, references, reachability, loop bounds,
form schemas, expressions and limits. Paths read like ``steps.review.form_schema``,
``steps.checks.steps[1].step_type`` or ``edges[2].condition``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import cache
from typing import Any, cast

import jsonschema
import msgspec

from workflow_core.errors import ValidationIssue
from workflow_core.expressions import check_expression
from workflow_core.forms import check_form_schema
from workflow_core.graph import compile_graph, strongly_connected
from workflow_core.models import StepKind
from workflow_core.version import Version
from workflow_core.wire import (
    ConditionalGroupSpec,
    DefinitionSpec,
    HumanStepSpec,
    MachineStepSpec,
    NodeSpec,
    ParallelGroupSpec,
    SequentialGroupSpec,
    SignalStepSpec,
    TimerStepSpec,
    wire_json_schema,
)

__all__ = [
    "DEFINITION_NAME",
    "LIMITS",
    "STEP_NAME",
    "STEP_TYPE",
    "check_wire_structure",
    "validate_spec",
]

DEFINITION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
STEP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
STEP_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,7}$")
"""Dotted lower case (``payments.charge``): safe as a NATS subject token sequence, no wildcards."""
SIGNAL_NAME = STEP_TYPE


class _Limits(msgspec.Struct, frozen=True):
    max_steps: int = 500
    """Nodes after expanding groups."""
    max_edges: int = 2000
    max_group_depth: int = 8
    max_wire_bytes: int = 512 * 1024


LIMITS = _Limits()


# --------------------------------------------------------------------------- structure


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(wire_json_schema())


def _format_path(parts: Iterator[Any] | Any) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """Unwrap anyOf errors of tagged unions into the errors of the branch the ``type`` tag names."""
    if error.validator != "anyOf" or not error.context:
        yield error
        return
    instance: Any = error.instance
    tag: Any = cast("Mapping[str, Any]", instance).get("type") if isinstance(instance, Mapping) else None
    schema: Any = error.schema
    branches: list[Any] = (
        list(cast("Mapping[str, Any]", schema).get("anyOf", [])) if isinstance(schema, Mapping) else []
    )
    chosen: int | None = None
    defs: dict[str, Any] = wire_json_schema()["$defs"]
    for index, branch in enumerate(branches):
        ref: Any = cast("Mapping[str, Any]", branch).get("$ref", "") if isinstance(branch, Mapping) else ""
        target: Any = defs.get(str(ref).rsplit("/", 1)[-1], {})
        enum = target.get("properties", {}).get("type", {}).get("enum", [])
        if tag in enum:
            chosen = index
    if chosen is None:
        if tag is None and isinstance(instance, Mapping):
            yield jsonschema.ValidationError("a step needs a 'type'", path=error.absolute_path)
        elif isinstance(instance, Mapping):
            kinds = sorted(
                t for d in defs.values() for t in d.get("properties", {}).get("type", {}).get("enum", [])
            )
            yield jsonschema.ValidationError(
                f"unknown step type {tag!r}; expected one of {', '.join(kinds)}", path=error.absolute_path
            )
        else:
            yield error
        return
    for sub in error.context:
        if sub.relative_schema_path and sub.relative_schema_path[0] == chosen:
            yield from _leaf_errors(sub)


def check_wire_structure(data: Mapping[str, Any]) -> list[ValidationIssue]:
    """Every structural problem of a raw wire mapping (types, required and unknown fields)."""
    issues: list[ValidationIssue] = []
    errors: Iterator[jsonschema.ValidationError] = _validator().iter_errors(data)  # pyright: ignore[reportUnknownMemberType]
    for error in errors:
        for leaf in _leaf_errors(error):
            message = leaf.message
            if leaf.validator == "additionalProperties":
                message = message.replace("Additional properties are not allowed", "unknown field(s)")
            issues.append(ValidationIssue(path=_format_path(leaf.absolute_path), message=message))
    unique = {(i.path, i.message): i for i in issues}
    return sorted(unique.values(), key=lambda i: i.path)


# --------------------------------------------------------------------------- meaning


def validate_spec(spec: DefinitionSpec) -> list[ValidationIssue]:
    """Every semantic problem of a decoded definition (an empty list when it is valid)."""
    issues: list[ValidationIssue] = []

    def add(path: str, message: str) -> None:
        issues.append(ValidationIssue(path=path, message=message))

    if not DEFINITION_NAME.fullmatch(spec.name):
        add("name", f"{spec.name!r} is not a valid name (lower case letters, digits, '-' and '_', 1-64)")
    if not Version.is_valid(spec.version):
        add("version", f"{spec.version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    if not spec.steps:
        add("steps", "a definition needs at least one step")
    size = len(msgspec.json.encode(spec))
    if size > LIMITS.max_wire_bytes:
        add("", f"definition is {size} bytes; the limit is {LIMITS.max_wire_bytes}")

    for key, node in spec.steps.items():
        if not STEP_NAME.fullmatch(key):
            add(f"steps.{key}", f"{key!r} is not a valid step name (letters, digits, '-' and '_', 1-64)")
        _check_node(node, f"steps.{key}", add, depth=1)

    kinds = {key: type(node) for key, node in spec.steps.items()}
    defaults: dict[str, int] = {}
    seen_edges: set[tuple[str, str, str | None, bool]] = set()
    for index, edge in enumerate(spec.edges):
        path = f"edges[{index}]"
        for end in ("source", "target"):
            name = getattr(edge, end)
            if name not in spec.steps:
                add(f"{path}.{end}", f"unknown step {name!r}")
        signature = (edge.source, edge.target, edge.condition, edge.on_error)
        if signature in seen_edges:
            add(path, f"duplicate edge {edge.source} -> {edge.target}")
        seen_edges.add(signature)
        if edge.condition is not None:
            problem = check_expression(edge.condition)
            if problem is not None:
                add(f"{path}.condition", problem)
            if edge.default:
                add(path, "a default edge cannot have a condition")
        if edge.default:
            defaults[edge.source] = defaults.get(edge.source, 0) + 1
            if defaults[edge.source] == 2:
                add(path, f"step {edge.source!r} has more than one default edge")
        source_kind = kinds.get(edge.source)
        if source_kind is not None:
            from workflow_core.wire import ParallelGatewaySpec

            if source_kind in (ParallelGatewaySpec,) and (edge.condition is not None or edge.default):
                add(path, "edges out of a parallel gateway take no condition and no default")
            if edge.on_error and source_kind is not MachineStepSpec:
                add(path, "only a machine step can have an on_error edge")
            if edge.on_error and edge.default:
                add(path, "an on_error edge cannot be a default edge")

    if spec.start is not None:
        if not spec.start:
            add("start", "start lists no step")
        for index, name in enumerate(spec.start):
            if name not in spec.steps:
                add(f"start[{index}]", f"unknown step {name!r}")

    if issues:
        # Reachability and loops only make sense once every reference resolves.
        return issues

    graph = compile_graph(spec)
    if len(graph.nodes) > LIMITS.max_steps:
        add("steps", f"{len(graph.nodes)} steps after expanding groups; the limit is {LIMITS.max_steps}")
    edge_count = sum(len(v) for v in graph.outgoing.values())
    if edge_count > LIMITS.max_edges:
        add("edges", f"{edge_count} edges after expanding groups; the limit is {LIMITS.max_edges}")
    if not graph.start:
        add("steps", "no start step: every step has an incoming edge (set 'start' or remove a loop edge)")
        return issues

    reachable = set(graph.start)
    for node in graph.start:
        reachable |= graph.reach[node]
    for key in spec.steps:
        if key in reachable:
            continue
        incoming = {e.source for e in spec.edges if e.target == key}
        if incoming and all(key in graph.reach.get(src, frozenset()) or src == key for src in incoming):
            add(
                f"steps.{key}",
                f"step {key!r} is a join that can never fire: each incoming edge comes after it",
            )
        else:
            add(f"steps.{key}", f"step {key!r} is unreachable from the start")

    for key, node in graph.nodes.items():
        gateway = node.kind in (
            StepKind.EXCLUSIVE_GATEWAY,
            StepKind.PARALLEL_GATEWAY,
            StepKind.INCLUSIVE_GATEWAY,
        )
        if gateway and not graph.outgoing.get(key) and "/" not in key:
            add(f"steps.{key}", f"gateway {key!r} has no outgoing edge")

    successors = {n: [e.target for e in graph.outgoing.get(n, ())] for n in graph.nodes}
    for component in strongly_connected(graph.nodes, successors):
        cyclic = len(component) > 1 or component[0] in successors[component[0]]
        if cyclic and not any(graph.nodes[n].max_visits for n in component):
            members = ", ".join(sorted(component))
            add(
                f"steps.{sorted(component)[0].split('/')[0]}",
                f"loop without a bound through {members}: set max_visits on one of its steps",
            )
    return issues


def _check_node(node: NodeSpec, path: str, add: Any, *, depth: int) -> None:
    if depth > LIMITS.max_group_depth:
        add(path, f"groups are nested deeper than {LIMITS.max_group_depth}")
        return
    match node:
        case MachineStepSpec():
            if not STEP_TYPE.fullmatch(node.step_type):
                add(
                    f"{path}.step_type",
                    f"{node.step_type!r} is not a valid step type (dotted lower case, e.g. payments.charge)",
                )
            retry = node.retry
            if retry.max_interval < retry.initial_interval:
                add(f"{path}.retry.max_interval", "max_interval is shorter than initial_interval")
        case HumanStepSpec():
            for problem in check_form_schema(node.form_schema):
                add(f"{path}.form_schema{_pointer_to_path(problem.path)}", problem.message)
            if node.escalation is not None and node.due_in is None:
                add(f"{path}.escalation", "an escalation needs due_in")
        case TimerStepSpec():
            if (node.duration is None) == (node.until is None):
                add(path, "a timer needs exactly one of duration and until")
            if node.until is not None:
                try:
                    moment = datetime.fromisoformat(node.until)
                except ValueError:
                    add(f"{path}.until", f"{node.until!r} is not an ISO 8601 date-time")
                else:
                    if moment.tzinfo is None:
                        add(f"{path}.until", "until needs a UTC offset (e.g. 2026-01-01T09:00:00+00:00)")
        case SignalStepSpec():
            if not SIGNAL_NAME.fullmatch(node.signal):
                add(f"{path}.signal", f"{node.signal!r} is not a valid signal name (dotted lower case)")
        case SequentialGroupSpec() | ParallelGroupSpec():
            _check_members([(f"{path}.steps[{i}]", m) for i, m in enumerate(node.steps)], path, add, depth)
        case ConditionalGroupSpec():
            members = [(f"{path}.branches[{i}].step", b.step) for i, b in enumerate(node.branches)]
            for index, branch in enumerate(node.branches):
                problem = check_expression(branch.condition)
                if problem is not None:
                    add(f"{path}.branches[{index}].condition", problem)
            if node.default is not None:
                members.append((f"{path}.default", node.default))
            _check_members(members, path, add, depth)
        case _:
            pass


def _check_members(members: list[tuple[str, NodeSpec]], path: str, add: Any, depth: int) -> None:
    if not members:
        add(path, "a group needs at least one step")
    names: set[str] = set()
    for member_path, member in members:
        if member.name is None:
            add(f"{member_path}.name", "a group's step needs a name")
        elif not STEP_NAME.fullmatch(member.name):
            add(f"{member_path}.name", f"{member.name!r} is not a valid step name")
        elif member.name in names:
            add(f"{member_path}.name", f"duplicate step name {member.name!r} in this group")
        else:
            names.add(member.name)
        _check_node(member, member_path, add, depth=depth + 1)


def _pointer_to_path(pointer: str) -> str:
    """``/properties/a/0`` → ``.properties.a[0]``."""
    text = ""
    for part in pointer.split("/")[1:] if pointer else []:
        text += f"[{part}]" if part.isdigit() else f".{part}"
    return text
