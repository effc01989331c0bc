"""Fixtures for workflow_core's tests."""

from __future__ import annotations

import pytest

from workflow_core.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
