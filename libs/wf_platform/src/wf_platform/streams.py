"""Idempotent JetStream stream provisioning.

:func:`ensure_stream` creates a stream from a :class:`StreamSpec`, or verifies an existing one and
refuses (:class:`UnsafeStreamError`) when its settings would break the guarantees we rely on:

- a subject of ours not covered by the stream (our messages would go nowhere, or to another stream);
- memory storage where file storage is required (a server restart loses messages);
- another retention or discard policy (``discard=new`` turns a full stream into publish errors; a work
  queue stream deletes messages other consumers still need);
- a duplicate window shorter than ours (a republished outbox row would be stored twice);
- a shorter ``max_age`` than ours (messages expire before consumers are expected to read them).

Looser settings that only cost disk (longer max age, more replicas) are accepted as they are. The
stream is never silently modified: changing a shared stream is an operator decision.

``WF_EVENTS`` (``wf.events.>``) is provisioned by every service that publishes events; its settings
and their reasons are in ``docs/nats.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

__all__ = [
    "WF_EVENTS",
    "WF_JOBS",
    "WF_RESULTS",
    "WF_TASKS",
    "StreamSpec",
    "UnsafeStreamError",
    "ensure_stream",
]

logger = logging.getLogger("wf_platform.streams")

_DAY = 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """What a stream must be."""

    name: str
    subjects: tuple[str, ...]
    description: str = ""
    storage: Literal["file", "memory"] = "file"
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    discard: Literal["old", "new"] = "old"
    max_age_seconds: float = 7 * _DAY
    """0 means no age limit."""
    duplicate_window_seconds: float = 600.0
    max_bytes: int = -1
    max_msg_size: int = 1_048_576
    num_replicas: int = 1

    def to_config(self) -> StreamConfig:
        """The nats-py configuration to create the stream with."""
        return StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            storage=StorageType(self.storage),
            retention=RetentionPolicy(self.retention),
            discard=DiscardPolicy(self.discard),
            max_age=self.max_age_seconds,
            duplicate_window=self.duplicate_window_seconds,
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            num_replicas=self.num_replicas,
        )


WF_EVENTS = StreamSpec(
    name="WF_EVENTS",
    subjects=("wf.events.>",),
    description="Domain events of every service (definition.published, instance.*)",
    storage="file",
    retention="limits",
    discard="old",
    max_age_seconds=7 * _DAY,
    duplicate_window_seconds=600.0,
)
"""Events are facts for anyone to read: kept 7 days whatever is consumed (limits retention), the
oldest dropped first when a limit is hit (publishers never block), on disk, and deduplicated for 10
minutes: longer than any outbox relay retry after a crash between publish and marking sent."""


class UnsafeStreamError(RuntimeError):
    """An existing stream's settings would break our delivery guarantees."""

    def __init__(self, stream: str, problems: list[str]) -> None:
        self.stream = stream
        self.problems = problems
        super().__init__(f"stream {stream} exists with unsafe settings: " + "; ".join(problems))


def _covers(pattern: str, subject: str) -> bool:
    """Whether stream subject ``pattern`` matches all that ``subject`` (maybe a wildcard) matches."""
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return i < len(s_tokens)
        if i >= len(s_tokens):
            return False
        s = s_tokens[i]
        if s == ">":
            return False
        if p not in {"*", s}:
            return False
    return len(p_tokens) == len(s_tokens)


def _value(setting: object, default: str) -> str:
    # nats-py hands back enums or plain strings depending on the path; compare by value.
    if setting is None:
        return default
    value: object = getattr(setting, "value", setting)
    return str(value)


def _problems(spec: StreamSpec, config: StreamConfig) -> list[str]:
    problems: list[str] = []
    existing_subjects = list(config.subjects or [])
    for subject in spec.subjects:
        if not any(_covers(pattern, subject) for pattern in existing_subjects):
            problems.append(f"subject {subject} not covered by {existing_subjects}")
    storage = _value(config.storage, "file")
    if spec.storage == "file" and storage != "file":
        problems.append(f"storage is {storage}, file is required")
    retention = _value(config.retention, "limits")
    if retention != spec.retention:
        problems.append(f"retention is {retention}, {spec.retention} is required")
    discard = _value(config.discard, "old")
    if discard != spec.discard:
        problems.append(f"discard is {discard}, {spec.discard} is required")
    window = config.duplicate_window or 0.0
    if window + 1e-6 < spec.duplicate_window_seconds:
        problems.append(
            f"duplicate window is {window}s, at least {spec.duplicate_window_seconds}s is required"
        )
    max_age = config.max_age or 0.0
    if spec.max_age_seconds == 0 and max_age != 0:
        problems.append(f"max age is {max_age}s, unlimited is required")
    elif max_age != 0 and max_age + 1e-6 < spec.max_age_seconds:
        problems.append(f"max age is {max_age}s, at least {spec.max_age_seconds}s is required")
    return problems


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, /) -> StreamInfo:
    """Create the stream, or verify the existing one; raise :class:`UnsafeStreamError` if it is unsafe."""
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        try:
            info = await js.add_stream(spec.to_config())  # pyright: ignore[reportUnknownMemberType]
        except BadRequestError:
            # Another replica created it between our lookup and our create: verify theirs.
            info = await js.stream_info(spec.name)
        else:
            logger.info("created stream %s for %s", spec.name, ", ".join(spec.subjects))
            return info
    problems = _problems(spec, info.config)
    if problems:
        raise UnsafeStreamError(spec.name, problems)
    return info


# Jobs, results and task messages are commands that must not vanish: kept until a consumer acks
# them (work-queue retention), never aged out (max_age 0), and refused when the stream is full
# (discard=new) rather than silently dropping the oldest: a refused publish stays in the outbox
# and is retried, a dropped job would be lost. The duplicate window (10 minutes) is far longer than
# any outbox republish after a crash. Work-queue streams refuse overlapping consumers: a step type
# is served either by one all-tenant worker group or by per-tenant groups; the inbox consumes
# wf.tasks.*.{created,cancelled,escalated} and the orchestrator wf.tasks.*.completed.
def _command_stream(name: str, subject: str, description: str) -> StreamSpec:
    return StreamSpec(
        name=name,
        subjects=(subject,),
        description=description,
        retention="workqueue",
        discard="new",
        max_age_seconds=0.0,
        duplicate_window_seconds=600.0,
    )


WF_JOBS = _command_stream("WF_JOBS", "wf.jobs.>", "Machine step jobs: orchestrator -> workers")
WF_RESULTS = _command_stream("WF_RESULTS", "wf.results.>", "Machine step results: workers -> orchestrator")
WF_TASKS = _command_stream("WF_TASKS", "wf.tasks.>", "Human tasks: orchestrator <-> inbox")
