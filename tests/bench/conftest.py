"""The bench's modules that the test environment can load: ``bench`` is not one of its packages
(most of its modules need aiohttp, psutil or matplotlib), so a module that needs none of them is
loaded from its file."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench_module(name: str, /) -> ModuleType:
    """``bench/<name>.py``, loaded as the module ``bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_module() -> Callable[[str], ModuleType]:
    """:func:`load_bench_module`, for a test module's fixture."""
    return load_bench_module
