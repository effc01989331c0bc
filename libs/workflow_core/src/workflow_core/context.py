"""The workflow context: the shared JSON state that flows through one instance."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from workflow_core.models import StepRecord

__all__ = ["WorkflowContext"]

_MISSING: Any = object()


class WorkflowContext:
    """What a step sees while it runs: the instance's data, and who and where it runs for.

    Steps read with :meth:`get` and write with :meth:`set`; what a machine step sets becomes its
    output, which the engine merges into the instance's data. The context a step receives is a
    copy: nothing reaches the instance except through ``set``.
    """

    __slots__ = ("_changes", "_data", "_metadata", "history", "tenant_id", "user_id")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        /,
        *,
        metadata: Mapping[str, Any] | None = None,
        history: Sequence[StepRecord] = (),
        user_id: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        self._data: dict[str, Any] = copy_data(data) if data else {}
        self._changes: dict[str, Any] = {}
        self._metadata: Mapping[str, Any] = MappingProxyType(dict(metadata or {}))
        self.history: tuple[StepRecord, ...] = tuple(history)
        """The steps this instance ran so far, oldest first."""
        self.user_id = user_id
        """The user who started the instance or completed the task, if known."""
        self.tenant_id = tenant_id
        """The tenant the instance belongs to, if any."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` in the context data, or ``default``."""
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set ``key`` in the context data; it becomes part of the step's output."""
        self._data[key] = value
        self._changes[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    @property
    def data(self) -> dict[str, Any]:
        """The context data as this step sees it (including its own changes)."""
        return self._data

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Read-only facts about this execution: instance id, definition, version, step, job id, attempt."""
        return self._metadata

    @property
    def output(self) -> dict[str, Any]:
        """What this step has set: merged into the instance's data when the step completes."""
        return dict(self._changes)

    @property
    def job_id(self) -> str | None:
        """The job's id: the idempotency key of a machine step's side effects (stable across attempts)."""
        value = self._metadata.get("job_id")
        return str(value) if value is not None else None

    @property
    def attempt(self) -> int:
        """Which attempt of the step this is, from 1."""
        return int(self._metadata.get("attempt", 1))


_ATOMS = (str, int, float, bool, type(None))


def copy_data(data: Mapping[str, Any], /) -> dict[str, Any]:
    """A deep copy of context data: JSON-shaped values copied by hand (several times faster than
    ``copy.deepcopy``, which this runs on every step), anything else by ``copy.deepcopy``."""
    if not data:
        return {}  # a comprehension is a function call: skip it (no-op steps see empty data)
    return {key: _copy_value(value) for key, value in data.items()}


def _copy_value(value: Any, /) -> Any:
    kind: type[Any] = type(value)  # pyright: ignore[reportUnknownVariableType]
    if kind in _ATOMS:
        return value
    if kind is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if kind is list:
        return [_copy_value(v) for v in value]
    return copy.deepcopy(value)
