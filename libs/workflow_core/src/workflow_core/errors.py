"""Errors of workflow_core.

One root, :class:`WorkflowCoreError`; each error carries its context as attributes::

    WorkflowCoreError
    ├── DefinitionInvalidError        a definition failed validation (every problem in ``errors``)
    ├── VersionError                  a string is not a semantic version
    ├── EngineError                   an event cannot be applied
    │   ├── UnknownTaskError          no open task with that id
    │   ├── TaskDataInvalidError      task data violates the form schema (every problem in ``errors``)
    │   ├── InstanceNotActiveError    the instance already ended
    │   └── NoIncidentError           retry asked for, but there is no open incident
    └── InstanceNotFoundError         LocalEngine: no such instance
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = [
    "DefinitionInvalidError",
    "EngineError",
    "InstanceNotActiveError",
    "InstanceNotFoundError",
    "NoIncidentError",
    "TaskDataInvalidError",
    "UnknownTaskError",
    "ValidationIssue",
    "VersionError",
    "WorkflowCoreError",
]


class ValidationIssue(msgspec.Struct, frozen=True, kw_only=True):
    """One problem found in an input, with where it is.

    Attributes:
        path: Where the problem is, as a dotted path with list indexes
            (``steps.review.form_schema``, ``edges[2].target``); ``""`` for the whole input.
        message: What is wrong, for a person.
    """

    path: str
    message: str


class WorkflowCoreError(Exception):
    """Root of every error raised by workflow_core."""


class DefinitionInvalidError(WorkflowCoreError):
    """A definition failed validation; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[ValidationIssue]) -> None:
        self.errors = list(errors)
        summary = "; ".join(f"{e.path or '<root>'}: {e.message}" for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(f"invalid workflow definition: {summary}{more}")


class VersionError(WorkflowCoreError, ValueError):
    """A string is not a semantic version."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])")


class EngineError(WorkflowCoreError):
    """An event cannot be applied to an instance."""


class UnknownTaskError(EngineError):
    """No open task with this id exists in the instance."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no open task {task_id}")


class TaskDataInvalidError(EngineError):
    """Task data violates the task's form schema; ``errors`` lists every problem."""

    def __init__(self, task_id: str, errors: Sequence[ValidationIssue]) -> None:
        self.task_id = task_id
        self.errors = list(errors)
        super().__init__(f"task {task_id}: " + "; ".join(f"{e.path}: {e.message}" for e in self.errors))


class InstanceNotActiveError(EngineError):
    """The instance already ended (completed or cancelled)."""

    def __init__(self, instance_id: str, status: str) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(f"instance {instance_id} is {status}")


class NoIncidentError(EngineError):
    """A retry was asked for, but the instance has no open incident."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id} has no open incident")


class InstanceNotFoundError(WorkflowCoreError, KeyError):
    """LocalEngine has no instance with this id."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no instance {instance_id}")
