"""DriverStatement: a hot statement sent on the asyncpg connection beneath SQLAlchemy's. It commits
and rolls back with the unit, and a connection it leaves unusable never goes back to the pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # pyright: ignore[reportMissingTypeStubs]
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.db import DriverStatement, create_engine, ensure_database

_INSERT = DriverStatement(sa.text("INSERT INTO things (name) VALUES (:name) RETURNING id, name"))
_FAIL = DriverStatement(sa.text("SELECT 1 / CAST(:zero AS integer) AS boom"))


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    await ensure_database(fresh_database)
    engine = create_engine(fresh_database, pool_size=1)  # one connection: a bad one would come back
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE things (id serial PRIMARY KEY, name text NOT NULL)"))
    yield engine
    await engine.dispose()


async def names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.text("SELECT name FROM things ORDER BY id"))).scalars())


async def write_then_fail(engine: AsyncEngine, *, after_a_statement: bool) -> None:
    async with engine.connect() as conn, conn.begin():
        if after_a_statement:
            await conn.execute(sa.text("INSERT INTO things (name) VALUES ('dropped before')"))
        await _INSERT.fetchrow(conn, {"name": "dropped"})
        raise RuntimeError("after the write")


def test_parameters_are_bound_by_name_in_the_order_the_sql_uses_them() -> None:
    statement = DriverStatement(sa.text("SELECT :b AS b, :a AS a, :b AS again"))
    assert statement.sql == "SELECT $1 AS b, $2 AS a, $1 AS again"
    assert statement.names == ("b", "a")


async def test_inside_a_transaction_it_commits_and_rolls_back_with_it(engine: AsyncEngine) -> None:
    async with engine.connect() as conn, conn.begin():
        await conn.execute(sa.text("INSERT INTO things (name) VALUES ('before')"))
        row = await _INSERT.fetchrow(conn, {"name": "kept"})
        assert row["name"] == "kept"
    with pytest.raises(RuntimeError, match="after the write"):
        await write_then_fail(engine, after_a_statement=True)
    assert await names(engine) == ["before", "kept"]


async def test_on_an_autocommit_connection_it_commits_by_itself(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await _INSERT.execute(conn, {"name": "alone"})
        await conn.rollback()  # nothing to roll back: the statement was its own transaction
    assert await names(engine) == ["alone"]


async def test_a_postgres_error_keeps_the_connection(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        before = (await conn.get_raw_connection()).driver_connection
        with pytest.raises(asyncpg.DivisionByZeroError):
            await _FAIL.fetchrow(conn, {"zero": 0})
        assert not conn.invalidated
    async with engine.connect() as conn:
        assert (await conn.get_raw_connection()).driver_connection is before
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1


async def test_a_connection_closed_under_it_is_not_handed_out_again(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        doomed = (await conn.get_raw_connection()).driver_connection
        pid = doomed.get_server_pid()
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    killer = await asyncpg.connect(url)  # pyright: ignore[reportUnknownMemberType]
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", pid)  # pyright: ignore[reportUnknownMemberType]
    finally:
        await killer.close()  # pyright: ignore[reportUnknownMemberType]
    # Let the pooled connection read the server's goodbye first: caught mid-read, asyncpg reports the
    # same death as an InternalClientError instead (invalidated all the same: not a server error).
    for _ in range(100):  # bounded: 5 s
        if doomed.is_closed():
            break
        await asyncio.sleep(0.05)
    assert doomed.is_closed()
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        async with engine.connect() as conn:
            await _INSERT.fetchrow(conn, {"name": "lost"})
    async with engine.connect() as conn:  # a new connection, not the dead one
        assert (await conn.get_raw_connection()).driver_connection is not doomed
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    assert await names(engine) == []


async def test_as_the_first_statement_of_a_transaction_it_rolls_back_with_it(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="after the write"):
        await write_then_fail(engine, after_a_statement=False)  # SQLAlchemy has sent no BEGIN yet
    async with engine.connect() as conn, conn.begin():
        await _INSERT.fetchrow(conn, {"name": "kept"})
    assert await names(engine) == ["kept"]


async def test_without_a_transaction_it_is_its_own(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:  # no begin(), no statement: nothing for SQLAlchemy to roll back
        await _INSERT.execute(conn, {"name": "alone"})
    assert await names(engine) == ["alone"]
