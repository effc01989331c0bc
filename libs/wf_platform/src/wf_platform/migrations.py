"""Alembic, run per schema, from code.

Every service keeps Alembic scripts for its tenant schema (``<package>:migrations``) and shares the
platform's scripts for the ``wf`` schema (``wf_platform:platform_migrations``). A script directory's
``env.py`` is two lines: ``from wf_platform.migrations import run_env; run_env()``.

:func:`upgrade` runs inside the caller's transaction with ``SET LOCAL search_path`` to the target
schema, so migration scripts use unqualified names and cannot touch another schema by accident; the
version table lives in the target schema too (``<schema>.alembic_version``). ``SET LOCAL`` ends with
the transaction, so the pooled connection carries nothing afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = ["PLATFORM_MIGRATIONS", "head_revision", "migration_lock", "run_env", "upgrade"]

PLATFORM_MIGRATIONS = "wf_platform:platform_migrations"

_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def migration_lock() -> asyncio.Lock:
    """The lock every migration in this process holds while it runs (one per event loop).

    Alembic's ``context`` is process-global: two upgrades running at once (two new tenants
    provisioned together, in one app or in two apps of one process) would run on each other's
    connections. The advisory locks order replicas; this lock orders this process.
    """
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def _config(
    script_location: str, *, connection: Connection | None = None, schema: str | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


@functools.cache
def head_revision(script_location: str, /) -> str | None:
    """The head revision of a script directory (cached: scripts do not change in a running process)."""
    return ScriptDirectory.from_config(_config(script_location)).get_current_head()


def upgrade(connection: Connection, /, *, script_location: str, schema: str, revision: str = "head") -> None:
    """Create ``schema`` if needed and upgrade it to ``revision``, in the connection's transaction.

    ``schema`` must already be validated (it is quoted, not escaped, into DDL).
    """
    if not schema.replace("_", "").isalnum() or not schema.isascii():
        raise ValueError(f"refusing suspicious schema name {schema!r}")
    connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    connection.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    command.upgrade(_config(script_location, connection=connection, schema=schema), revision)


def run_env() -> None:
    """The body of every ``env.py``: run the migrations on the connection :func:`upgrade` passed."""
    config = context.config
    connection: Any = config.attributes.get("connection")
    schema: Any = config.attributes.get("schema")
    if connection is None or schema is None:
        raise RuntimeError(
            "run migrations through wf_platform.migrations.upgrade (or `python -m <service> migrate`)"
        )
    context.configure(connection=connection, version_table_schema=schema, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
