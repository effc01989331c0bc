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
import pytest

from wf_platform.testing import SigningKeys
from wf_stack._os import free_port
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


def test_a_served_process_freezes_its_startup_heap(postgres_url: str, nats_url: str, tmp_path: Path) -> None:
    """``service_main`` moves what startup built out of the collector's reach once the app has started
    (a full collection over it stopped the event loop for 70-160 ms)."""
    keys = SigningKeys.generate()
    public_key = tmp_path / "jwt.pem"
    public_key.write_text(keys.public_pem)
    port = free_port()
    service = ServiceProcess.start(
        "definition_registry",
        env={
            "DEFINITION_REGISTRY_DATABASE_URL": database_url(postgres_url, f"frz_{uuid.uuid4().hex[:8]}"),
            "DEFINITION_REGISTRY_NATS_URL": nats_url,
            "DEFINITION_REGISTRY_JWT_PUBLIC_KEY_FILE": str(public_key),
            "DEFINITION_REGISTRY_PORT": str(port),
            "OTEL_TRACES_EXPORTER": "none",
        },
        port=port,
        log_dir=tmp_path,
    )
    try:
        frozen = [
            json.loads(line)
            for line in service.log_path.read_text().splitlines()
            if "startup heap frozen" in line
        ]
    finally:
        service.stop()
    assert len(frozen) == 1
    count = int(frozen[0]["message"].split(": ")[1].split()[0])
    assert count > 50_000  # the app, its modules and pools, not a handful
