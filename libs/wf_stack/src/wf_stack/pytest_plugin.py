"""pytest fixtures for real Postgres and nats-server (registered as the ``wf_stack`` pytest11 plugin).

Session fixtures, started lazily, only when a test asks for them:

- ``postgres_url``: a ``postgresql://`` superuser URL to the ``postgres`` database;
- ``nats_url`` and ``nats_monitor_url``: a JetStream-enabled nats-server and its monitoring URL.

When ``WF_TEST_PG_URL`` / ``WF_TEST_NATS_URL`` / ``WF_TEST_NATS_MONITOR_URL`` are set (``make test``
runs pytest under ``python -m wf_stack run``) they are used as they are; otherwise each fixture
starts its own server on free ports for the session, so ``uv run pytest path/to/test.py`` works alone.

Function fixtures:

- ``fresh_database``: creates a uniquely named database on that server and drops it afterwards
  (PostgreSQL 13+, ``DROP DATABASE ... WITH (FORCE)``); yields its ``postgresql+asyncpg://`` URL;
- ``nats_server_factory`` / ``postgres_server_factory``: start private servers that a test may
  kill, pause or restart; all are stopped at teardown.

The fixtures are synchronous (they work for sync and async tests alike, whatever the asyncio mode)
and import the servers lazily, so loading the plugin costs every pytest run next to nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from wf_stack.nats import NatsServer
    from wf_stack.postgres import PostgresServer

__all__ = [
    "NatsServerFactory",
    "PostgresServerFactory",
    "database_url",
    "fresh_database",
    "nats_monitor_url",
    "nats_server_factory",
    "nats_url",
    "postgres_server_factory",
    "postgres_url",
]

ENV_PG_URL = "WF_TEST_PG_URL"
ENV_NATS_URL = "WF_TEST_NATS_URL"
ENV_NATS_MONITOR_URL = "WF_TEST_NATS_MONITOR_URL"

_T = TypeVar("_T")


class NatsServerFactory(Protocol):
    """The callable yielded by ``nats_server_factory`` (arguments as in `NatsServer.start`)."""

    def __call__(self, *, port: int = 0, monitor_port: int = 0, store_dir: Path | None = None) -> NatsServer:
        """Start a private nats-server; it is stopped when the test ends."""
        ...


class PostgresServerFactory(Protocol):
    """The callable yielded by ``postgres_server_factory`` (arguments as in `PostgresServer.start`)."""

    def __call__(
        self,
        *,
        port: int = 0,
        data_dir: Path | None = None,
        fsync: bool = False,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
    ) -> PostgresServer:
        """Start a private Postgres; it is stopped (and a throwaway data dir removed) when the test ends."""
        ...


@dataclass(frozen=True, slots=True)
class _NatsEndpoints:
    url: str
    monitor_url: str | None


def database_url(server_url: str, database: str, *, driver: str = "postgresql+asyncpg") -> str:
    """`server_url` pointed at another `database`, with the URL scheme `driver`.

    Args:
        server_url: Any ``postgresql[+driver]://`` URL of the server.
        database: The database name.
        driver: The scheme of the result (``"postgresql"`` for plain asyncpg/libpq).
    """
    parts = urlsplit(server_url)
    return urlunsplit((driver, parts.netloc, "/" + quote(database, safe=""), parts.query, parts.fragment))


def _from_env(name: str) -> str | None:
    return os.environ.get(name, "").strip() or None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` superuser URL to the ``postgres`` database of the session's server."""
    url = _from_env(ENV_PG_URL)
    if url is not None:
        yield url
        return
    from wf_stack.postgres import PostgresServer  # only when a test needs it

    with PostgresServer.start() as server:
        yield server.url


@pytest.fixture(scope="session")
def wf_stack_nats() -> Iterator[_NatsEndpoints]:
    """The session's nats-server addresses (prefer ``nats_url`` and ``nats_monitor_url``)."""
    url = _from_env(ENV_NATS_URL)
    if url is not None:
        _session_nats["url"] = url
        yield _NatsEndpoints(url, _from_env(ENV_NATS_MONITOR_URL))
        return
    from wf_stack.nats import NatsServer  # only when a test needs it

    with NatsServer.start() as server:
        _session_nats["url"] = server.url
        yield _NatsEndpoints(server.url, server.monitor_url)
    _session_nats.pop("url", None)


# The JetStream state a test module leaves behind (streams, and above all durable consumers on the
# work-queue streams, which refuse a second consumer whose filter overlaps) must not reach the next
# module: before the first test of each module that uses the session's nats-server, every stream is
# deleted (and its consumers with it). Apps and tests provision what they need again.
_session_nats: dict[str, str] = {}
_last_module: dict[str, str] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Give each test module that uses ``nats_url`` an empty JetStream."""
    if "nats_url" not in getattr(item, "fixturenames", ()):
        return
    module = item.nodeid.split("::", 1)[0]
    if _last_module.get("name") == module:
        return
    _last_module["name"] = module
    url = _session_nats.get("url") or _from_env(ENV_NATS_URL)
    if url is not None:
        _run_sync(_delete_streams(url))


async def _delete_streams(url: str) -> None:
    import nats  # here: keeps loading the plugin cheap

    client: Any = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)  # pyright: ignore[reportUnknownMemberType]
    try:
        jetstream: Any = client.jetstream()
        for info in await jetstream.streams_info():
            await jetstream.delete_stream(info.config.name)
    finally:
        await client.close()


@pytest.fixture(scope="session")
def nats_url(wf_stack_nats: _NatsEndpoints) -> str:
    """The ``nats://`` URL of the session's JetStream-enabled nats-server."""
    return wf_stack_nats.url


@pytest.fixture(scope="session")
def nats_monitor_url(wf_stack_nats: _NatsEndpoints) -> str:
    """The ``http://`` monitoring URL of the session's nats-server (``/jsz``, ``/healthz``, ...)."""
    if wf_stack_nats.monitor_url is None:
        pytest.fail(f"{ENV_NATS_URL} is set but {ENV_NATS_MONITOR_URL} is not", pytrace=False)
    return wf_stack_nats.monitor_url


@pytest.fixture
def fresh_database(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database for this test, dropped afterwards; yields its ``postgresql+asyncpg://`` URL."""
    name = _unique_database_name(request.node.name)
    _run_sync(_execute(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(postgres_url, name)
    finally:
        _run_sync(_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def nats_server_factory() -> Iterator[NatsServerFactory]:
    """Start private nats-servers (to kill, pause, restart); every one is stopped at teardown."""
    from wf_stack.nats import NatsServer  # only when a test needs it

    with ExitStack() as cleanup:

        def start(*, port: int = 0, monitor_port: int = 0, store_dir: Path | None = None) -> NatsServer:
            return cleanup.enter_context(
                NatsServer.start(port=port, monitor_port=monitor_port, store_dir=store_dir)
            )

        yield start


@pytest.fixture
def postgres_server_factory() -> Iterator[PostgresServerFactory]:
    """Start private Postgres servers (to kill, pause, restart); every one is stopped at teardown."""
    from wf_stack.postgres import PostgresServer  # only when a test needs it

    with ExitStack() as cleanup:

        def start(
            *,
            port: int = 0,
            data_dir: Path | None = None,
            fsync: bool = False,
            max_connections: int = 200,
            settings: Mapping[str, str] | None = None,
        ) -> PostgresServer:
            server = PostgresServer.start(
                port=port, data_dir=data_dir, fsync=fsync, max_connections=max_connections, settings=settings
            )
            return cleanup.enter_context(server)

        yield start


def _unique_database_name(test_name: str) -> str:
    # Readable in pg_database when a test leaks one, unique across parallel sessions, and within
    # the 63-byte identifier limit.
    slug = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[:40]
    return f"t_{slug}_{uuid.uuid4().hex[:12]}"


class _Connection(Protocol):
    """The slice of asyncpg.Connection used here (asyncpg ships no type hints)."""

    async def execute(self, query: str, /) -> str: ...

    async def close(self) -> None: ...


async def _execute(url: str, sql: str) -> None:
    import asyncpg  # here: keeps loading the plugin cheap

    connect = cast("Callable[[str], Awaitable[_Connection]]", asyncpg.connect)  # pyright: ignore[reportUnknownMemberType]
    # asyncpg wants a plain libpq-style URL, not SQLAlchemy's "postgresql+asyncpg" scheme.
    conn = await connect(urlsplit(url)._replace(scheme="postgresql").geturl())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    # A thread of its own: the calling thread may already run an event loop (an async test's).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wf-stack-fixture") as pool:
        return pool.submit(asyncio.run, coro).result()
