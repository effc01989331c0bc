"""The definition wire format: what the registry stores and the orchestrator runs.

A definition on the wire is a JSON object::

    {"name": "order", "version": "1.0.0", "description": "...",
     "steps": {"charge": {"type": "machine", "step_type": "payments.charge"}, ...},
     "edges": [{"source": "charge", "target": "ship", "condition": "amount > 100"}]}

Every node of ``steps`` carries a ``type`` tag. Groups hold their members in order, each member
with its own ``name`` (its id inside the group). Durations are seconds (numbers). The JSON Schema
of this format is
generated from these Structs (:func:`wire_json_schema`) and published in
``libs/workflow_core/schema/definition.schema.json``; a test keeps the file in sync.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "DEFAULT_RETRY",
    "WIRE_FORMAT_VERSION",
    "ConditionalBranchSpec",
    "ConditionalGroupSpec",
    "DefinitionSpec",
    "EdgeSpec",
    "EscalationSpec",
    "ExclusiveGatewaySpec",
    "HumanStepSpec",
    "InclusiveGatewaySpec",
    "MachineStepSpec",
    "NodeSpec",
    "ParallelGatewaySpec",
    "ParallelGroupSpec",
    "RetryPolicySpec",
    "SequentialGroupSpec",
    "SignalStepSpec",
    "TimerStepSpec",
    "wire_json_schema",
]

WIRE_FORMAT_VERSION = 1

Seconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 24 * 3600, description="A duration in seconds.")]
Visits = Annotated[
    int, msgspec.Meta(ge=1, le=10_000, description="How often the step may run in one instance.")
]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
ShortText = Annotated[str, msgspec.Meta(max_length=256)]


class _Node(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    name: ShortText | None = None
    """The step's name: required for a group's member (its id inside the group); at the top level
    the key is the id and ``name`` (if any) is the step's own name."""
    description: Text = ""
    max_visits: Visits | None = None
    """Loop bound: a step inside a cycle must have one somewhere on the cycle."""


class RetryPolicySpec(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """How a failed machine step is retried before it becomes an incident."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    backoff: Literal["fixed", "exponential"] = "exponential"
    initial_interval: Seconds = 1.0
    max_interval: Seconds = 300.0
    multiplier: Annotated[float, msgspec.Meta(ge=1, le=100)] = 2.0
    non_retryable_errors: list[ShortText] = []


DEFAULT_RETRY = RetryPolicySpec()
"""The retry policy of a machine step that sets none (omitted on the wire)."""


class MachineStepSpec(_Node, frozen=True, tag="machine"):
    """An automated step, executed by a worker subscribed to ``step_type``."""

    step_type: ShortText
    retry: RetryPolicySpec = DEFAULT_RETRY
    timeout: Seconds | None = None
    """Deadline of one attempt; past it the attempt is abandoned and retried."""


class EscalationSpec(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """What happens when a human task passes its due date."""

    candidate_groups: list[ShortText] = []
    """Groups added to the task's candidates."""
    priority: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    """The task's new priority."""


class HumanStepSpec(_Node, frozen=True, tag="human"):
    """A task for a person, completed with data that must satisfy ``form_schema``."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    form_schema: dict[str, Any] = {}
    ui_hints: dict[str, Any] = {}
    assignee: ShortText | None = None
    candidate_users: list[ShortText] = []
    candidate_groups: list[ShortText] = []
    due_in: Seconds | None = None
    follow_up_in: Seconds | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    context_fields: list[ShortText] | None = None
    """Context keys copied into the task for the person to see; ``None`` means all."""
    escalation: EscalationSpec | None = None


class ExclusiveGatewaySpec(_Node, frozen=True, tag="exclusive_gateway"):
    """Takes the first outgoing edge whose condition holds, else the default edge."""


class ParallelGatewaySpec(_Node, frozen=True, tag="parallel_gateway"):
    """Takes every outgoing edge."""


class InclusiveGatewaySpec(_Node, frozen=True, tag="inclusive_gateway"):
    """Takes every outgoing edge whose condition holds, else the default edge."""


class TimerStepSpec(_Node, frozen=True, tag="timer"):
    """Waits for a duration, or until a point in time (ISO 8601 with offset)."""

    duration: Seconds | None = None
    until: ShortText | None = None


class SignalStepSpec(_Node, frozen=True, tag="signal"):
    """Waits until a signal of this name reaches the instance; its data is merged into the context."""

    signal: ShortText


class SequentialGroupSpec(_Node, frozen=True, tag="sequential_group"):
    """Runs its members one after the other."""

    steps: list[NodeSpec]


class ParallelGroupSpec(_Node, frozen=True, tag="parallel_group"):
    """Runs its members at once and continues when all have finished."""

    steps: list[NodeSpec]


class ConditionalBranchSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One branch of a conditional group: its member runs when its condition holds."""

    condition: Annotated[str, msgspec.Meta(max_length=2048)]
    step: NodeSpec


class ConditionalGroupSpec(_Node, frozen=True, tag="conditional_group"):
    """Runs the first branch whose condition holds, else ``default`` (else an incident)."""

    branches: list[ConditionalBranchSpec]
    default: NodeSpec | None = None


NodeSpec = (
    MachineStepSpec
    | HumanStepSpec
    | ExclusiveGatewaySpec
    | ParallelGatewaySpec
    | InclusiveGatewaySpec
    | TimerStepSpec
    | SignalStepSpec
    | SequentialGroupSpec
    | ParallelGroupSpec
    | ConditionalGroupSpec
)
"""Every kind of node, tagged by ``type``."""


class EdgeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A sequence flow between two steps."""

    source: ShortText
    target: ShortText
    condition: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    default: bool = False
    on_error: bool = False
    """Taken instead of raising an incident when the source machine step fails for good."""


class DefinitionSpec(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A whole definition on the wire."""

    name: ShortText
    version: ShortText
    steps: dict[str, NodeSpec]
    edges: list[EdgeSpec] = []
    description: Text = ""
    start: list[ShortText] | None = None
    """Start steps; by default every step without incoming edges."""
    format: int = WIRE_FORMAT_VERSION


def wire_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the definition wire format, generated from the Structs."""
    schema = msgspec.json.schema(DefinitionSpec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://workflow-suite.dev/schema/definition.schema.json"
    schema["title"] = "Workflow definition"
    return schema
