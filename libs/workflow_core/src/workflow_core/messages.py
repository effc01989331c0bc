"""Bodies of the NATS messages (DESIGN.md §5): frozen msgspec Structs, UTF-8 JSON on the wire.

Fields added later get defaults, so old producers and consumers keep working. Unknown fields are
ignored when decoding (forward compatibility). Headers (``traceparent``, ``Nats-Msg-Id``) are not
part of the bodies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from workflow_core.models import StepError

__all__ = [
    "DefinitionPublished",
    "DefinitionRef",
    "InstanceEvent",
    "JobMessage",
    "JobResult",
    "TaskCancelledMessage",
    "TaskCompletedMessage",
    "TaskCreatedMessage",
    "TaskEscalatedMessage",
    "decode",
    "encode",
    "job_msg_id",
]


T = TypeVar("T")


class DefinitionRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which definition version an instance runs."""

    name: str
    version: str


class JobMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A machine step's job: ``wf.jobs.<tenant>.<step_type>``, ``Nats-Msg-Id: <job_id>:<attempt>``."""

    job_id: str
    tenant: str
    instance_id: str
    step: str
    step_type: str
    attempt: int
    input: dict[str, Any]
    deadline: datetime | None
    definition: DefinitionRef


class JobResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A worker's report on one attempt: ``wf.results.<tenant>``."""

    job_id: str
    attempt: int
    status: Literal["completed", "failed"]
    output: dict[str, Any] = {}
    error: StepError | None = None


class TaskCreatedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A human task to open: ``wf.tasks.<tenant>.created``."""

    task_id: str
    tenant: str
    instance_id: str
    definition: DefinitionRef
    step: str
    title: str
    created_at: datetime
    description: str = ""
    form_schema: dict[str, Any] = {}
    ui_hints: dict[str, Any] = {}
    assignee: str | None = None
    candidate_users: list[str] = []
    candidate_groups: list[str] = []
    priority: int = 50
    due_at: datetime | None = None
    follow_up_at: datetime | None = None
    context: dict[str, Any] = {}


class TaskCancelledMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A task withdrawn by the orchestrator: ``wf.tasks.<tenant>.cancelled``."""

    task_id: str
    tenant: str
    instance_id: str
    reason: str = ""


class TaskEscalatedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An overdue task widened: ``wf.tasks.<tenant>.escalated`` (an extension of DESIGN §5)."""

    task_id: str
    tenant: str
    instance_id: str
    add_candidate_groups: list[str] = []
    priority: int | None = None


class TaskCompletedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A task completed in the inbox: ``wf.tasks.<tenant>.completed``."""

    task_id: str
    tenant: str
    instance_id: str
    data: dict[str, Any]
    user: str
    completed_at: datetime
    comment: str | None = None


class InstanceEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle event: ``wf.events.<tenant>.instance.<started|completed|failed|cancelled>``."""

    tenant: str
    instance_id: str
    definition: DefinitionRef
    status: str
    at: datetime
    business_key: str | None = None
    reason: str | None = None


class DefinitionPublished(msgspec.Struct, frozen=True, kw_only=True):
    """A definition version was registered: ``wf.events.<tenant>.definition.published``."""

    tenant: str
    name: str
    version: str
    digest: str
    author: str
    published_at: str


def job_msg_id(job_id: str, attempt: int) -> str:
    """The stable ``Nats-Msg-Id`` of a job attempt."""
    return f"{job_id}:{attempt}"


_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """A message body as UTF-8 JSON."""
    return _encoder.encode(message)


def decode(data: bytes, kind: type[T]) -> T:
    """Decode a message body; raises ``msgspec.ValidationError`` / ``DecodeError`` on a bad one."""
    return msgspec.json.decode(data, type=kind)
