"""Ports: the Protocols the engine's users implement, with in-memory fakes beside them.

Services depend on these Protocols; tests use the fakes. The orchestrator implements
:class:`InstanceStore` on Postgres and :class:`EventBus` on NATS JetStream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import msgspec

from workflow_core.errors import WorkflowCoreError
from workflow_core.models import InstanceState

__all__ = [
    "ConcurrentUpdateError",
    "DefinitionStore",
    "EventBus",
    "ExecutionEngine",
    "InMemoryDefinitionStore",
    "InMemoryEventBus",
    "InMemoryInstanceStore",
    "InstanceStore",
    "PublishedMessage",
    "Workflow",
]


@runtime_checkable
class Workflow(Protocol):
    """A versioned definition: what the registry stores and an engine runs."""

    name: str
    version: str
    description: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible wire form."""
        ...


class ExecutionEngine(Protocol):
    """Runs instances of workflows (LocalEngine in-process; the orchestrator as a service)."""

    async def start(self, definition: Any, *, input: Mapping[str, Any] | None = None) -> InstanceState:
        """Start an instance."""
        ...

    def get(self, instance_id: str) -> InstanceState:
        """The instance's state."""
        ...

    async def complete_task(
        self, task_id: str, *, data: Mapping[str, Any], user: str | None = None
    ) -> InstanceState:
        """Complete a human task."""
        ...

    async def signal(
        self, instance_id: str, name: str, *, data: Mapping[str, Any] | None = None
    ) -> InstanceState:
        """Deliver a signal."""
        ...

    async def cancel(self, instance_id: str, *, reason: str = "") -> InstanceState:
        """Cancel an instance."""
        ...


class ConcurrentUpdateError(WorkflowCoreError):
    """The instance changed since it was read (optimistic concurrency)."""

    def __init__(self, instance_id: str, expected: int) -> None:
        self.instance_id = instance_id
        self.expected = expected
        super().__init__(f"instance {instance_id} is no longer at version {expected}")


class InstanceStore(Protocol):
    """Durable instance states with a version column for optimistic concurrency."""

    async def create(self, state: InstanceState, /) -> None:
        """Store a new instance at version 1."""
        ...

    async def get(self, instance_id: str, /) -> tuple[InstanceState, int] | None:
        """The state and its version, or None."""
        ...

    async def update(self, state: InstanceState, /, *, expected_version: int) -> int:
        """Store a new state if the stored one is still at ``expected_version``; the new version.

        Raises:
            ConcurrentUpdateError: someone else updated it first.
        """
        ...


class DefinitionStore(Protocol):
    """Where an engine finds definitions by name and version."""

    async def get(self, name: str, version: str, /) -> Workflow | None:
        """One version, or None."""
        ...


class EventBus(Protocol):
    """Publishes messages with a stable id (the broker drops duplicates within its window)."""

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish one message."""
        ...


@dataclass(slots=True)
class InMemoryInstanceStore:
    """An :class:`InstanceStore` in a dict (states stored as JSON, as a database would)."""

    _rows: dict[str, tuple[bytes, int]] = field(default_factory=dict[str, tuple[bytes, int]])

    async def create(self, state: InstanceState, /) -> None:
        if state.instance_id in self._rows:
            raise ConcurrentUpdateError(state.instance_id, 0)
        self._rows[state.instance_id] = (msgspec.json.encode(state), 1)

    async def get(self, instance_id: str, /) -> tuple[InstanceState, int] | None:
        row = self._rows.get(instance_id)
        if row is None:
            return None
        return msgspec.json.decode(row[0], type=InstanceState), row[1]

    async def update(self, state: InstanceState, /, *, expected_version: int) -> int:
        row = self._rows.get(state.instance_id)
        if row is None or row[1] != expected_version:
            raise ConcurrentUpdateError(state.instance_id, expected_version)
        self._rows[state.instance_id] = (msgspec.json.encode(state), expected_version + 1)
        return expected_version + 1


@dataclass(slots=True)
class InMemoryDefinitionStore:
    """A :class:`DefinitionStore` in a dict."""

    _definitions: dict[tuple[str, str], Workflow] = field(default_factory=dict[tuple[str, str], Workflow])

    def add(self, definition: Workflow) -> None:
        """Store a definition."""
        self._definitions[(definition.name, definition.version)] = definition

    async def get(self, name: str, version: str, /) -> Workflow | None:
        return self._definitions.get((name, version))


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    """A message an :class:`InMemoryEventBus` received."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str]


@dataclass(slots=True)
class InMemoryEventBus:
    """An :class:`EventBus` that records messages and drops duplicate ids, like JetStream's window."""

    messages: list[PublishedMessage] = field(default_factory=list[PublishedMessage])
    _ids: set[str] = field(default_factory=set[str])

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        if msg_id in self._ids:
            return
        self._ids.add(msg_id)
        self.messages.append(PublishedMessage(subject, payload, msg_id, dict(headers or {})))

    def subjects(self) -> Sequence[str]:
        """Subjects published so far, in order."""
        return [m.subject for m in self.messages]
