"""``python -m <service> migrate``: what the Helm migration Job runs, against a real Postgres."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from wf_stack.pytest_plugin import database_url

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
