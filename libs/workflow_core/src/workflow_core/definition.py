"""Workflow definitions: the Python DSL, the wire format round trip, and loading JSON or YAML.

A :class:`WorkflowDefinition` is built from steps (classes or instances) and :class:`Edge` objects,
or read from the wire with :meth:`WorkflowDefinition.from_wire` / :func:`load_definition`. Both
paths validate everything and raise one :class:`DefinitionInvalidError` listing every problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import yaml

from workflow_core.errors import DefinitionInvalidError, ValidationIssue
from workflow_core.steps import as_step, spec_to_step, step_to_spec
from workflow_core.wire import DefinitionSpec, EdgeSpec, NodeSpec

if TYPE_CHECKING:
    from workflow_core.graph import CompiledGraph

__all__ = ["MAX_DEFINITION_BYTES", "Edge", "WorkflowDefinition", "load_definition"]

MAX_DEFINITION_BYTES = 512 * 1024
"""Largest wire form accepted (canonical JSON)."""


class Edge:
    """A sequence flow from ``source`` to ``target`` (each a step key, or a step class / instance).

    Args:
        source: Where the flow starts.
        target: Where it goes.
        condition: A CEL expression over the context data; the edge is taken when it holds.
        default: Taken only when no conditional edge of the same source held.
        on_error: Taken instead of an incident when the source machine step fails for good.
    """

    __slots__ = ("condition", "default", "on_error", "source", "target")

    def __init__(
        self,
        source: object,
        target: object,
        condition: str | None = None,
        *,
        default: bool = False,
        on_error: bool = False,
    ) -> None:
        self.source = source
        self.target = target
        self.condition = condition
        self.default = default
        self.on_error = on_error

    def __repr__(self) -> str:
        extra = f", condition={self.condition!r}" if self.condition else ""
        extra += ", default=True" if self.default else ""
        extra += ", on_error=True" if self.on_error else ""
        return f"Edge({self.source!r}, {self.target!r}{extra})"


class WorkflowDefinition:
    """A versioned blueprint: steps, the edges between them, and metadata.

    Args:
        name: Definition name (lower case, digits, ``-`` and ``_``).
        version: Semantic version (``1.0.0``).
        description: Free text.
        steps: Steps by key (``{"a": ChargeCard, ...}``), or a sequence keyed by each step's name.
        edges: The flows between steps; ends are keys, or step classes / instances.
        start: Start step keys; by default every step without incoming edges.

    Raises:
        DefinitionInvalidError: with every problem found.
    """

    def __init__(
        self,
        name: str,
        version: str,
        description: str = "",
        *,
        steps: Mapping[str, object] | Sequence[object],
        edges: Sequence[Edge] = (),
        start: Sequence[str] | None = None,
    ) -> None:
        issues: list[ValidationIssue] = []
        keyed: dict[str, Any] = {}
        if isinstance(steps, Mapping):
            keyed = {str(k): as_step(v) for k, v in steps.items()}
        else:
            for index, item in enumerate(steps):
                step = as_step(item)
                key = str(getattr(step, "name", ""))
                if key in keyed:
                    issues.append(
                        ValidationIssue(path=f"steps[{index}]", message=f"duplicate step name {key!r}")
                    )
                keyed[key] = step
        self.name = name
        self.version = version
        self.description = description
        self.steps: dict[str, Any] = keyed
        self.start = list(start) if start is not None else None
        self.edges: list[Edge] = []
        for index, edge in enumerate(edges):
            source = self._resolve(edge.source, f"edges[{index}].source", issues)
            target = self._resolve(edge.target, f"edges[{index}].target", issues)
            self.edges.append(
                Edge(source, target, edge.condition, default=edge.default, on_error=edge.on_error)
            )
        self.spec = DefinitionSpec(
            name=name,
            version=version,
            description=description,
            steps={key: _without_default_name(key, step_to_spec(step)) for key, step in keyed.items()},
            edges=[
                EdgeSpec(
                    source=str(e.source),
                    target=str(e.target),
                    condition=e.condition,
                    default=e.default,
                    on_error=e.on_error,
                )
                for e in self.edges
            ],
            start=self.start,
        )
        try:
            # One canonical form whatever the source: a Python ``initial_interval=1`` and YAML's
            # ``1`` both become 1.0, so the same definition always has the same digest.
            self.spec = msgspec.convert(msgspec.to_builtins(self.spec), DefinitionSpec)
        except msgspec.ValidationError as exc:
            issues.append(ValidationIssue(path=_msgspec_path(str(exc)), message=str(exc)))
        self._check(issues)

    def _resolve(self, end: object, path: str, issues: list[ValidationIssue]) -> str:
        if isinstance(end, str):
            return end
        matches = [
            key
            for key, step in self.steps.items()
            if step is end or (isinstance(end, type) and type(step) is end)
        ]
        if len(matches) == 1:
            return matches[0]
        what = getattr(end, "__name__", None) or repr(end)
        problem = "is not a step of this definition" if not matches else f"matches several steps {matches}"
        issues.append(ValidationIssue(path=path, message=f"{what} {problem}"))
        return f"<unresolved {what}>"

    def _check(self, issues: list[ValidationIssue]) -> None:
        from workflow_core.validation import validate_spec  # validation imports this module

        issues = issues + validate_spec(self.spec)
        if issues:
            raise DefinitionInvalidError(issues)

    # ------------------------------------------------------------------ wire

    @classmethod
    def from_spec(cls, spec: DefinitionSpec) -> WorkflowDefinition:
        """A definition from a decoded wire spec (validated)."""
        steps = {key: spec_to_step(node, key=key) for key, node in spec.steps.items()}
        edges = [
            Edge(e.source, e.target, e.condition, default=e.default, on_error=e.on_error) for e in spec.edges
        ]
        return cls(spec.name, spec.version, spec.description, steps=steps, edges=edges, start=spec.start)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> WorkflowDefinition:
        """A definition from its wire form (a JSON-compatible mapping).

        Raises:
            DefinitionInvalidError: with every structural and semantic problem found.
        """
        from workflow_core.validation import check_wire_structure

        issues = check_wire_structure(data)
        if issues:
            raise DefinitionInvalidError(issues)
        try:
            spec = msgspec.convert(dict(data), type=DefinitionSpec)
        except msgspec.ValidationError as exc:  # the schema check should have caught it
            raise DefinitionInvalidError([ValidationIssue(path="", message=str(exc))]) from exc
        return cls.from_spec(spec)

    def to_wire(self) -> dict[str, Any]:
        """The wire form: a JSON-compatible dict that :meth:`from_wire` reads back unchanged."""
        wire: dict[str, Any] = msgspec.to_builtins(self.spec)
        return wire

    def canonical_json(self) -> bytes:
        """The wire form as canonical JSON (sorted keys, no spaces): what digests are taken of."""
        return json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of :meth:`canonical_json`."""
        return "sha256:" + hashlib.sha256(self.canonical_json()).hexdigest()

    @cached_property
    def graph(self) -> CompiledGraph:
        """The executable graph (groups expanded, conditions compiled); built once."""
        from workflow_core.graph import compile_graph

        return compile_graph(self.spec)

    def step(self, key: str) -> Any:
        """The step object for a node id (``key`` or ``group/member``), or None for synthetic nodes."""
        parts = key.split("/")
        current: Any = self.steps.get(parts[0])
        for part in parts[1:]:
            if current is None or part.startswith("#"):
                return None
            members: list[Any] = [as_step(s) for s in getattr(current, "steps", ())]
            members += [as_step(s) for _, s in getattr(current, "branches", ())]
            default = getattr(current, "default", None)
            if default is not None:
                members.append(as_step(default))
            current = next((m for m in members if getattr(m, "name", None) == part), None)
        return current

    def __repr__(self) -> str:
        return f"WorkflowDefinition(name={self.name!r}, version={self.version!r}, steps={list(self.steps)})"


def _msgspec_path(message: str) -> str:
    """``... - at `$.steps.a.retry`'' -> ``steps.a.retry``."""
    marker = "at `$."
    if marker not in message:
        return ""
    return message.split(marker, 1)[1].rstrip("`")


def _without_default_name(key: str, spec: NodeSpec) -> NodeSpec:
    # At the top level the key is the id; a name equal to it says nothing.
    return msgspec.structs.replace(spec, name=None) if spec.name == key else spec


def load_definition(
    source: str | bytes | Mapping[str, Any], /, *, format: Literal["json", "yaml", "auto"] = "auto"
) -> WorkflowDefinition:
    """Parse and validate a definition from JSON or YAML text, or from a mapping.

    Raises:
        DefinitionInvalidError: every problem found; a syntax error names its line.
    """
    if isinstance(source, Mapping):
        return WorkflowDefinition.from_wire(source)
    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else source
    if len(text.encode()) > MAX_DEFINITION_BYTES:
        raise DefinitionInvalidError(
            [ValidationIssue(path="", message=f"definition is larger than {MAX_DEFINITION_BYTES} bytes")]
        )
    kind = format
    if kind == "auto":
        kind = "json" if text.lstrip().startswith("{") else "yaml"
    data: Any
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DefinitionInvalidError(
                [
                    ValidationIssue(
                        path="", message=f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                    )
                ]
            ) from exc
    else:
        try:
            data = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise DefinitionInvalidError(
                [ValidationIssue(path="", message=f"invalid YAML{where}: {problem}")]
            ) from exc
    if not isinstance(data, Mapping):
        raise DefinitionInvalidError([ValidationIssue(path="", message="a definition must be an object")])
    return WorkflowDefinition.from_wire(data)  # pyright: ignore[reportUnknownArgumentType]


class _SafeLoader(yaml.SafeLoader):
    """YAML without timestamps turned into datetimes (the wire format is JSON) and no duplicate keys."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key: Any = loader.construct_object(key_node)  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_SafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
