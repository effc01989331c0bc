"""The Dockerfiles in deploy/docker/: what can be checked without a Docker engine.

Each Dockerfile is parsed into stages and instructions and checked for the contract of
docs/conventions.md ("Containers and Kubernetes"): a uv builder with ``uv sync --locked``
for the right workspace package, a slim runtime as uid 10001, a healthcheck on
``/health/live``, ``python -m <module>`` as the entry point. ``uv sync --locked --dry-run``
then proves the package and the lock file agree, as the image build will need.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
# Dockerfile -> (workspace distribution, entry module or None, env prefix, port)
IMAGES: dict[str, tuple[str, str | None, str, int]] = {
    "definition-registry": ("definition-registry", "definition_registry", "DEFINITION_REGISTRY_", 8001),
    "orchestrator": ("orchestrator", "orchestrator", "ORCHESTRATOR_", 8002),
    "task-inbox": ("task-inbox", "task_inbox", "TASK_INBOX_", 8003),
    "worker": ("wf-cli", None, "WF_WORKER_HEALTH_", 8080),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), m.group(0)), text)


def parse(path: Path) -> Dockerfile:
    """Instructions with continuations joined and comments dropped, grouped by stage."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = args.split()
            stages.append(Stage(base=parts[0], name=parts[2] if len(parts) > 2 else None))
        elif instruction == "ARG" and not stages and "=" in args:
            key, _, value = args.partition("=")
            global_args[key] = value
        elif stages:
            stages[-1].instructions.append((instruction, args.strip()))
    return Dockerfile(global_args, stages)


@pytest.fixture(params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(DOCKER / f"{request.param}.Dockerfile")


def test_there_is_a_dockerfile_per_service_and_for_workers() -> None:
    assert {p.name for p in DOCKER.glob("*.Dockerfile")} == {f"{name}.Dockerfile" for name in IMAGES}


def test_bases_are_pinned_and_slim(image: tuple[str, Dockerfile]) -> None:
    _, dockerfile = image
    bases = [dockerfile.resolve(stage.base) for stage in dockerfile.stages]
    for base in bases:
        repository, _, tag = base.rpartition(":")
        assert repository and tag and tag != "latest", base
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", bases[0])
    assert re.fullmatch(r"python:3\.11-slim-\w+", bases[-1]), "the runtime is python 3.11 slim"
    assert len(dockerfile.stages) == 3


def test_builder_syncs_the_locked_package_with_uv(image: tuple[str, Dockerfile]) -> None:
    name, dockerfile = image
    distribution = IMAGES[name][0]
    builder = dockerfile.stages[1]
    (sync,) = [run for run in builder.all("RUN") if "uv sync" in run]
    for flag in ("--locked", "--no-dev", "--no-editable"):
        assert flag in sync, flag
    package = re.search(r"--package (\S+)", sync)
    assert package is not None
    if package.group(1).startswith("$"):  # a build argument with a default (the worker)
        defaults = dict(a.partition("=")[::2] for a in builder.all("ARG"))
        assert defaults[package.group(1).strip("${}")] == distribution
    else:
        assert package.group(1) == distribution
    assert "COPY --from=uv /uv /bin/uv" in [f"COPY {c}" for c in builder.all("COPY")]


def test_runtime_is_non_root_and_healthchecked(image: tuple[str, Dockerfile]) -> None:
    name, dockerfile = image
    _, module, prefix, port = IMAGES[name]
    runtime = dockerfile.runtime
    (user,) = runtime.all("USER")
    assert user == "10001:10001"
    # USER comes before what the container runs, after what installs.
    names = [instruction for instruction, _ in runtime.instructions]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n in {"RUN", "COPY"})
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/health/live" in healthcheck
    assert f"{prefix}PORT" in healthcheck
    assert "urllib.request" in healthcheck
    assert runtime.all("EXPOSE") == [str(port)]
    env = " ".join(runtime.all("ENV"))
    assert 'PATH="/app/.venv/bin:${PATH}"' in env
    assert f"{prefix}HOST=0.0.0.0" in env
    # Only the virtualenv (and, for the worker, the examples) reaches the runtime: no uv, no sources.
    copies = runtime.all("COPY")
    assert "--from=builder /app/.venv /app/.venv" in copies
    assert not [c for c in copies if "--from=uv" in c]
    if module is not None:
        (entrypoint,) = runtime.all("ENTRYPOINT")
        assert json.loads(entrypoint) == ["python", "-m", module]
    else:
        (command,) = runtime.all("CMD")
        assert json.loads(command) == ["wf", "worker", "run", "examples.worker:steps"]


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
        for p in dockerignore_patterns()
    )


def test_build_context_has_what_the_images_copy(image: tuple[str, Dockerfile]) -> None:
    name, dockerfile = image
    sources = [
        source
        for stage in dockerfile.stages
        for copy in stage.all("COPY")
        if not copy.startswith("--from")
        for source in copy.split()[:-1]
    ]
    assert sources
    for source in sources:
        assert not ignored(source), f".dockerignore drops {source}"
        if source == "examples" and not (REPO / source).exists():
            pytest.skip("examples/ (the example worker) is not in the tree yet")
        assert (REPO / source).exists(), f"{name}: COPY {source}: not in the repository"


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv", ".git", ".dev", ".tools", "libs/wf_platform/.venv", "services/orchestrator/tests"):
        assert ignored(path), path


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_uv_lock_covers_the_image_package(tmp_path: Path, name: str) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    distribution = IMAGES[name][0]
    result = subprocess.run(
        [
            uv,
            "sync",
            "--locked",
            "--no-dev",
            "--no-editable",
            "--package",
            distribution,
            "--dry-run",
            "--offline",
        ],
        cwd=REPO,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "venv").exists(), "a dry run creates nothing"
