"""The chaos tier runs only under ``make test-chaos`` (``WF_CHAOS=1``): its tests take minutes."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if os.environ.get("WF_CHAOS") == "1":
        return
    skip = pytest.mark.skip(reason="chaos tier: run it with `make test-chaos`")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)
