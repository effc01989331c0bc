from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from wf_stack import (
    BinaryNotFoundError,
    PortInUseError,
    PostgresServer,
    ServerStartError,
    ServerStateError,
    find_postgres_bindir,
    postgres,
)
from wf_stack._os import pid_alive
from wf_stack.pytest_plugin import PostgresServerFactory


async def fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_throwaway_server_serves_restarts_with_its_data_and_is_removed_on_exit() -> None:
    with PostgresServer.start(max_connections=50) as pg:
        assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        assert pg.url_for("app", driver="postgresql+asyncpg") == (
            f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/app"
        )
        assert await fetchval(pg.url, "SHOW fsync") == "off"
        assert await fetchval(pg.url, "SHOW max_connections") == "50"
        assert await fetchval(pg.url, "SHOW listen_addresses") == "127.0.0.1"
        assert await fetchval(pg.url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
        await fetchval(pg.url, "CREATE TABLE kept AS SELECT 42 AS answer")
        first_pid, port, data_dir = pg.pid, pg.port, pg.data_dir

        pg.restart()

        assert (pg.port, pg.data_dir) == (port, data_dir)
        assert pg.pid != first_pid
        assert not pid_alive(first_pid)
        assert await fetchval(pg.url, "SELECT answer FROM kept") == 42
        last_pid = pg.pid

    assert not pid_alive(last_pid)
    assert not data_dir.exists()
    assert not pg.is_running
    with pytest.raises(ServerStateError):
        pg.restart()


async def test_killed_server_restarts_with_committed_data_and_pause_hangs_clients(
    postgres_server_factory: PostgresServerFactory,
) -> None:
    pg = postgres_server_factory()
    await fetchval(pg.url, "CREATE TABLE kept AS SELECT 7 AS answer")
    conn = await asyncpg.connect(pg.url)  # a backend, to check that it goes away with the postmaster
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    postmaster = pg.pid

    pg.kill()

    assert not pg.is_running
    assert not pid_alive(postmaster)
    assert not pid_alive(backend)
    conn.terminate()
    pg.restart()  # crash recovery; fsync=off loses nothing when only processes die
    assert await fetchval(pg.url, "SELECT answer FROM kept") == 7

    pg.pause()
    try:
        with pytest.raises(TimeoutError):
            await fetchval_with_timeout(pg.url, timeout=0.5)
    finally:
        pg.resume()
    assert await fetchval(pg.url, "SELECT 1") == 1


async def fetchval_with_timeout(url: str, *, timeout: float) -> object:
    async with asyncio.timeout(timeout):
        return await fetchval(url, "SELECT 1")


async def test_given_data_dir_is_initialised_once_reused_and_kept(open_tmp_dir: Path) -> None:
    data_dir = open_tmp_dir / "pg"
    with PostgresServer.start(data_dir=data_dir) as pg:
        await fetchval(pg.url, "CREATE TABLE kept AS SELECT 1 AS answer")
    assert (data_dir / "PG_VERSION").is_file()
    initialised_at = (data_dir / "PG_VERSION").stat().st_mtime_ns

    with PostgresServer.start(data_dir=data_dir) as pg:
        assert await fetchval(pg.url, "SELECT answer FROM kept") == 1

    assert (data_dir / "PG_VERSION").stat().st_mtime_ns == initialised_at
    assert data_dir.is_dir()


def test_a_taken_fixed_port_is_named_in_the_error(taken_port: int) -> None:
    with pytest.raises(PortInUseError, match=f"port {taken_port} for PostgreSQL") as caught:
        PostgresServer.start(port=taken_port)
    assert caught.value.port == taken_port


def test_a_server_that_cannot_start_reports_its_log_and_leaves_nothing() -> None:
    with pytest.raises(ServerStartError, match="exited with code") as caught:
        PostgresServer.start(settings={"shared_buffers": "not-a-size"})
    assert "shared_buffers" in caught.value.log_tail
    assert caught.value.log_path is not None
    assert not caught.value.log_path.parent.exists()  # the throwaway data dir is gone


def test_without_binaries_the_error_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(postgres, "_SYSTEM_VERSIONS_DIR", tmp_path)
    monkeypatch.setattr(postgres.shutil, "which", lambda _name: None)
    monkeypatch.setattr(postgres, "_embedded_bindir", lambda: None)

    with pytest.raises(BinaryNotFoundError, match="apt-get install postgresql") as caught:
        find_postgres_bindir()
    assert "embedded" in str(caught.value)


@pytest.mark.skipif(postgres._embedded_bindir() is None, reason="the `embedded` extra is not installed")
async def test_the_embedded_wheel_serves() -> None:
    with PostgresServer.start(bindir=postgres._embedded_bindir()) as pg:
        assert str(await fetchval(pg.url, "SHOW server_version")).startswith("18")
