"""Load the steps a worker runs from ``module:attribute`` (what ``wf worker run`` takes)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["load_steps"]


def load_steps(target: str, /, *, search_path: Path | None = None) -> list[Any]:
    """The steps named by ``module:attribute`` (an iterable of step classes or instances, or one).

    Args:
        target: ``package.module:attribute``.
        search_path: Put first on ``sys.path`` (the working directory, as ``python -m`` would).

    Raises:
        ValueError: a malformed target, a missing module or attribute, or no steps in it.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected module:attribute, got {target!r}")
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from exc
    try:
        value: Any = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{module_name} has no attribute {attribute!r}") from None
    steps: list[Any] = (
        list(value) if isinstance(value, Iterable) and not isinstance(value, str | bytes) else [value]  # pyright: ignore[reportUnknownArgumentType]
    )
    if not steps:
        raise ValueError(f"{target} holds no steps")
    return steps
