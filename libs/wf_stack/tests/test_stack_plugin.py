"""The pytest plugin: its fixtures here, and its environment and teardown behaviour in an inner run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import httpx
import nats

from wf_stack._os import pid_alive
from wf_stack.pytest_plugin import database_url


async def test_postgres_url_is_a_superuser_url_to_the_postgres_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == "postgres"
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
    finally:
        await conn.close()


async def test_fresh_database_is_empty_and_its_own(fresh_database: str, postgres_url: str) -> None:
    assert fresh_database.startswith("postgresql+asyncpg://")
    conn = await asyncpg.connect(
        database_url(fresh_database, fresh_database.rsplit("/", 1)[1], driver="postgresql")
    )
    try:
        assert await conn.fetchval("SELECT current_database()") == fresh_database.rsplit("/", 1)[1]
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()


def test_fresh_database_works_for_sync_tests_too(fresh_database: str) -> None:
    assert fresh_database.startswith("postgresql+asyncpg://")


async def test_nats_url_has_jetstream(nats_url: str, nats_monitor_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{nats_monitor_url}/healthz", params={"js-enabled-only": "true"})
    assert response.status_code == 200


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "wf_stack.pytest_plugin", "-p", "no:cacheprovider"]

INNER_TESTS = """
import json, os
from pathlib import Path

REPORT = Path(os.environ["REPORT"])

def record(**values):
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data.update(values)
    REPORT.write_text(json.dumps(data))

def test_session_urls_come_from_the_environment(postgres_url, nats_url, nats_monitor_url):
    record(postgres_url=postgres_url, nats_url=nats_url, nats_monitor_url=nats_monitor_url)

def test_fresh_database(fresh_database):
    record(fresh_database=fresh_database)

def test_factories(nats_server_factory, postgres_server_factory):
    first, second = nats_server_factory(), nats_server_factory()
    first.kill()
    first.restart()
    pg = postgres_server_factory()
    record(pids=[first.pid, second.pid, pg.pid], dirs=[str(first.store_dir), str(pg.data_dir)])
"""


def test_inner_session_uses_the_environment_drops_databases_and_stops_private_servers(
    tmp_path: Path, postgres_url: str, nats_url: str, nats_monitor_url: str
) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS))
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        # Only this plugin (the outer session already proves that its entry point loads it).
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "REPORT": str(report),
        "WF_TEST_PG_URL": postgres_url,
        "WF_TEST_NATS_URL": nats_url,
        "WF_TEST_NATS_MONITOR_URL": nats_monitor_url,
    }
    done = subprocess.run(
        [*PYTEST, "--rootdir", str(tmp_path), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    seen = json.loads(report.read_text())
    assert (seen["postgres_url"], seen["nats_url"], seen["nats_monitor_url"]) == (
        postgres_url,
        nats_url,
        nats_monitor_url,
    )
    assert not asyncio.run(database_exists(postgres_url, seen["fresh_database"].rsplit("/", 1)[1]))
    assert not any(pid_alive(pid) for pid in seen["pids"])
    assert not any(Path(d).exists() for d in seen["dirs"])


async def database_exists(url: str, name: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()
