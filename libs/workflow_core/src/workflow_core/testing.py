"""Test helpers shipped with the library: a recording step and a fake clock for the pure engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import ClassVar

from workflow_core.context import WorkflowContext
from workflow_core.steps import BaseMachineStep

__all__ = ["FakeClock", "RecordingStep"]


class RecordingStep(BaseMachineStep):
    """A machine step that records the id of the node it ran as.

    It appends to ``trail`` in the context (which parallel branches overwrite: the context merge
    is last-writer-wins per key) and to the class-wide :attr:`log` (which sees every run; clear it
    at the start of a test).
    """

    name = "record"
    log: ClassVar[list[str]] = []

    async def execute(self, context: WorkflowContext) -> None:
        """Append ``metadata["step"]`` to ``trail`` and to :attr:`log`."""
        node = str(context.metadata["step"])
        RecordingStep.log.append(node)
        trail = list(context.get("trail", []))
        trail.append(node)
        context.set("trail", trail)


class FakeClock:
    """Time for pure-engine tests: each call is ``step`` later than the previous one."""

    def __init__(self, *, start: datetime | None = None, step: timedelta = timedelta(seconds=1)) -> None:
        self.start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._step = step
        self._ticks: Iterator[int] = count()

    def __call__(self) -> datetime:
        """The next instant."""
        return self.start + self._step * next(self._ticks)
