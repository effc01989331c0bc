"""NATS subjects and stream names of the suite (DESIGN.md §5). Every subject carries the tenant.

Tenants and step types are validated before they become subject tokens, so a name can never
inject a wildcard (``*``, ``>``), a separator or whitespace into a subject.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "EVENTS_STREAM",
    "JOBS_STREAM",
    "RESULTS_STREAM",
    "TASKS_STREAM",
    "TENANT_ID",
    "SubjectError",
    "definition_published_subject",
    "instance_event_subject",
    "job_subject",
    "result_subject",
    "task_subject",
    "validate_tenant",
]

JOBS_STREAM = "WF_JOBS"
RESULTS_STREAM = "WF_RESULTS"
TASKS_STREAM = "WF_TASKS"
EVENTS_STREAM = "WF_EVENTS"

TENANT_ID = re.compile(r"^[a-z][a-z0-9_]{2,31}$")
_STEP_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63}){0,7}$")


class SubjectError(ValueError):
    """A tenant or step type that cannot be part of a subject."""

    def __init__(self, what: str, value: str) -> None:
        self.what = what
        self.value = value
        super().__init__(f"invalid {what} for a subject: {value!r}")


def validate_tenant(tenant: str) -> str:
    """The tenant id if it matches ``^[a-z][a-z0-9_]{2,31}$``.

    Raises:
        SubjectError: it does not.
    """
    if not TENANT_ID.fullmatch(tenant):
        raise SubjectError("tenant", tenant)
    return tenant


def job_subject(tenant: str, step_type: str) -> str:
    """``wf.jobs.<tenant>.<step_type>``."""
    if not _STEP_TYPE.fullmatch(step_type):
        raise SubjectError("step type", step_type)
    return f"wf.jobs.{validate_tenant(tenant)}.{step_type}"


def result_subject(tenant: str) -> str:
    """``wf.results.<tenant>``."""
    return f"wf.results.{validate_tenant(tenant)}"


def task_subject(tenant: str, what: Literal["created", "cancelled", "completed", "escalated"]) -> str:
    """``wf.tasks.<tenant>.<created|cancelled|completed|escalated>``."""
    return f"wf.tasks.{validate_tenant(tenant)}.{what}"


def instance_event_subject(tenant: str, what: Literal["started", "completed", "failed", "cancelled"]) -> str:
    """``wf.events.<tenant>.instance.<started|completed|failed|cancelled>``."""
    return f"wf.events.{validate_tenant(tenant)}.instance.{what}"


def definition_published_subject(tenant: str) -> str:
    """``wf.events.<tenant>.definition.published``."""
    return f"wf.events.{validate_tenant(tenant)}.definition.published"
