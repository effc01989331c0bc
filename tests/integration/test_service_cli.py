"""``python -m <service> migrate``: what the Helm migration Job runs, against a real Postgres."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from wf_platform.testing import SigningKeys
from wf_stack import free_port
from wf_stack.pytest_plugin import database_url
from wf_stack.services import ServiceProcess

SERVICES = [
    ("definition_registry", "DEFINITION_REGISTRY"),
    ("orchestrator", "ORCHESTRATOR"),
    ("task_inbox", "TASK_INBOX"),
]


@pytest.mark.parametrize(("module", "prefix"), SERVICES)
def test_migrate_creates_the_database_the_shared_schema_and_named_tenants(
    module: str, prefix: str, postgres_url: str, nats_url: str
) -> None:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        f"{prefix}_DATABASE_URL": database_url(postgres_url, name),
        f"{prefix}_NATS_URL": nats_url,
        "OTEL_TRACES_EXPORTER": "none",
    }
    result = subprocess.run(
        [sys.executable, "-m", module, "migrate", "--tenant", "acme_corp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "migrated 1 tenant(s)" in result.stdout

    async def schemas() -> set[str]:
        connection = await asyncpg.connect(database_url(postgres_url, name, driver="postgresql"))
        try:
            rows = await connection.fetch("SELECT schema_name FROM information_schema.schemata")
            return {r["schema_name"] for r in rows}
        finally:
            await connection.close()

    found = asyncio.run(schemas())
    assert {"wf", "t_acme_corp"} <= found
    if module == "orchestrator":
        assert "orch" in found  # the shared timer schema


def _serve_registry(postgres_url: str, nats_url: str, tmp_path: Path, **settings: str) -> ServiceProcess:
    """The definition registry as ``python -m`` serves it (``service_main``), with extra settings."""
    keys = SigningKeys.generate()
    public_key = tmp_path / "jwt.pem"
    public_key.write_text(keys.public_pem)
    port = free_port()
    return ServiceProcess.start(
        "definition_registry",
        env={
            "DEFINITION_REGISTRY_DATABASE_URL": database_url(postgres_url, f"srv_{uuid.uuid4().hex[:8]}"),
            "DEFINITION_REGISTRY_NATS_URL": nats_url,
            "DEFINITION_REGISTRY_JWT_PUBLIC_KEY_FILE": str(public_key),
            "DEFINITION_REGISTRY_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
            **{f"DEFINITION_REGISTRY_{name}": value for name, value in settings.items()},
        },
        port=port,
        log_dir=tmp_path,
    )


def _log_lines(service: ServiceProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.log_path.read_text().splitlines() if line.startswith("{")]


def test_a_served_process_freezes_its_startup_heap(postgres_url: str, nats_url: str, tmp_path: Path) -> None:
    """``service_main`` moves what startup built out of the collector's reach once the app has started
    (a full collection over it stopped the event loop for 70-160 ms)."""
    service = _serve_registry(postgres_url, nats_url, tmp_path)
    try:
        frozen = [line for line in _log_lines(service) if "startup heap frozen" in str(line["message"])]
    finally:
        service.stop()
    assert len(frozen) == 1
    count = int(str(frozen[0]["message"]).split(": ")[1].split()[0])
    assert count > 50_000  # the app, its modules and pools, not a handful


@pytest.mark.parametrize("access_log", [None, "true"])
def test_requests_are_logged_one_line_each_only_when_access_log_is_on(
    postgres_url: str, nats_url: str, tmp_path: Path, access_log: str | None
) -> None:
    """``ACCESS_LOG`` (off by default): one JSON line per request, from ``uvicorn.access``."""
    service = _serve_registry(
        postgres_url, nats_url, tmp_path, **({"ACCESS_LOG": access_log} if access_log else {})
    )
    try:
        marker = f"/v1/definitions/probe-{uuid.uuid4().hex[:8]}"
        assert httpx.get(service.url + marker, timeout=10).status_code == 401  # no token
        service.stop()
        lines = _log_lines(service)
    finally:
        service.stop()
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any("startup heap frozen" in str(line["message"]) for line in lines)  # JSON lines were read
    if access_log is None:
        assert access == []
    else:
        logged = [line for line in access if marker in str(line["message"])]
        assert len(logged) == 1
        assert "401" in str(logged[0]["message"])
        assert logged[0]["service"] == "definition-registry"
