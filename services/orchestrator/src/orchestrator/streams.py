"""The JetStream streams the orchestrator provisions, and why they are set as they are.

Jobs, results and task messages are commands that must not vanish: their streams keep a message
until a consumer acks it (work-queue retention), never age it out (``max_age`` 0), and refuse new
messages when full (``discard=new``) rather than silently dropping the oldest: a refused publish
stays in the outbox and is retried, whereas a dropped job would be lost. The duplicate window (10
minutes) is far longer than any outbox republish after a crash, so a republished row is stored once.

- ``WF_JOBS`` (``wf.jobs.>``): workers bind durable pull consumers filtered to
  ``wf.jobs.<tenant|*>.<step_type>``. Work-queue streams refuse overlapping consumers, so a step
  type is served either by one all-tenant worker group or by per-tenant groups.
- ``WF_RESULTS`` (``wf.results.>``): the orchestrator's durable consumer ``orchestrator-results``.
- ``WF_TASKS`` (``wf.tasks.>``): the inbox consumes ``created``/``cancelled``/``escalated``, the
  orchestrator consumes ``completed`` (consumer ``orchestrator-task-completions``).
- ``WF_EVENTS`` (``wf.events.>``): lifecycle events for any observer; limits retention, 7 days.
"""

from __future__ import annotations

from wf_platform.streams import WF_EVENTS, StreamSpec
from workflow_core.subjects import JOBS_STREAM, RESULTS_STREAM, TASKS_STREAM

__all__ = ["ORCHESTRATOR_STREAMS", "WF_JOBS", "WF_RESULTS", "WF_TASKS"]

_COMMAND_STREAM = {
    "storage": "file",
    "retention": "workqueue",
    "discard": "new",
    "max_age_seconds": 0.0,
    "duplicate_window_seconds": 600.0,
    "max_msg_size": 1_048_576,
}

WF_JOBS = StreamSpec(
    name=JOBS_STREAM,
    subjects=("wf.jobs.>",),
    description="Machine step jobs: orchestrator -> workers",
    **_COMMAND_STREAM,  # pyright: ignore[reportArgumentType]
)
WF_RESULTS = StreamSpec(
    name=RESULTS_STREAM,
    subjects=("wf.results.>",),
    description="Machine step results: workers -> orchestrator",
    **_COMMAND_STREAM,  # pyright: ignore[reportArgumentType]
)
WF_TASKS = StreamSpec(
    name=TASKS_STREAM,
    subjects=("wf.tasks.>",),
    description="Human task commands and completions: orchestrator <-> inbox",
    **_COMMAND_STREAM,  # pyright: ignore[reportArgumentType]
)

ORCHESTRATOR_STREAMS = (WF_JOBS, WF_RESULTS, WF_TASKS, WF_EVENTS)
