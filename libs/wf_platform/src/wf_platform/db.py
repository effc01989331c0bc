"""Database plumbing: the engine, the shared tables, and tenant-scoped units of work.

Layout of each service's own database:

- schema ``wf`` (shared, migrated by wf_platform's Alembic scripts, version table ``wf.alembic_version``):
  ``wf.tenants`` (one row per tenant: status ``active``/``suspended``, the tenant schema's revision)
  and ``wf.outbox`` (every tenant's outgoing messages, see :mod:`wf_platform.outbox`);
- schema ``t_<tenant>`` per tenant (the service's own Alembic scripts, version table
  ``t_<tenant>.alembic_version``).

Tenant tables are declared with the placeholder schema :data:`TENANT_SCHEMA` and every tenant query
runs on a connection whose ``schema_translate_map`` maps it to ``t_<tenant>``. The schema name is thus
rendered into the SQL text of that one statement (SQLAlchemy does it at execution, so the compiled
cache stays shared) and nothing is left on the pooled DBAPI connection: no ``search_path``, no session
setting that could leak into the next tenant's request. A tenant table used without the map fails
loudly (schema ``tenant`` does not exist).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg  # pyright: ignore[reportMissingTypeStubs]
import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler

from wf_platform.tenancy import TenantId, tenant_schema

__all__ = [
    "OUTBOX_WRITE_COLUMNS",
    "OUTBOX_WRITE_CTES",
    "PLATFORM_SCHEMA",
    "TENANT_SCHEMA",
    "CommittedOutbox",
    "DriverStatement",
    "OutboxColumns",
    "OutboxMessage",
    "OutboxWrite",
    "SentMarks",
    "TenantDatabase",
    "UnitOfWork",
    "create_engine",
    "ensure_database",
    "metadata",
    "outbox_columns",
    "outbox_parameters",
    "outbox_table",
    "tenants_table",
    "transaction_lock",
]

logger = logging.getLogger("wf_platform.db")

_DUPLICATE_DATABASE: type[Exception] = getattr(asyncpg, "DuplicateDatabaseError")  # noqa: B009

PLATFORM_SCHEMA = "wf"
"""The shared schema of every service database (tenants, outbox)."""
TENANT_SCHEMA = "tenant"
"""Placeholder schema of tenant tables; mapped to ``t_<tenant>`` per connection."""

metadata = sa.MetaData()

tenants_table = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("schema_revision", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema=PLATFORM_SCHEMA,
)

outbox_table = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("headers", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("msg_id", sa.Text, nullable=False),
    sa.Column("ordering_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    schema=PLATFORM_SCHEMA,
)


_json_encoder = msgspec.json.Encoder()


def _encode_json(value: Any, /) -> str:
    return _json_encoder.encode(value).decode()


CONNECT_TIMEOUT_SECONDS = 5.0
"""How long opening a connection may take (asyncpg's default is 60 s)."""
COMMAND_TIMEOUT_SECONDS = 10.0
"""How long one statement may go unanswered before it fails (a paused or partitioned server)."""


def create_engine(
    url: str,
    /,
    *,
    pool_size: int = 10,
    pool_timeout: float = 10.0,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    command_timeout: float | None = COMMAND_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An asyncpg engine whose pool is the hard limit (no overflow).

    No pre-ping: it would cost a round trip per checkout on every request. A connection that died
    (database restart) fails its statement, SQLAlchemy invalidates the whole pool on that disconnect
    error, and the request fails once with a 503 (see :mod:`wf_platform.problems`); ``pool_recycle``
    bounds a connection's age.

    A server that stops answering without closing its connections (paused, partitioned) would
    otherwise hang requests and background loops forever: connecting is bounded by
    ``connect_timeout`` and each statement by ``command_timeout`` (client side, so it also fires
    when the server cannot even receive a cancel). Pass ``command_timeout=None`` for long
    administrative work (the ``migrate`` command does).
    """
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        # Every statement planned with its actual parameters and the tables' current size. A
        # tenant's tables start empty and grow fast; a cached generic plan made while they were
        # small (a sequential scan, say) stays until autovacuum's next ANALYZE, a minute or more.
        # Planning is cheap next to the batched statements it serves.
        "server_settings": {"plan_cache_mode": "force_custom_plan"},
    }
    if command_timeout is not None:
        connect_args["command_timeout"] = command_timeout
    return create_async_engine(
        url,
        # msgspec takes msgspec structs as they are (no to_builtins copy first) and is several
        # times faster than the standard library on the large states written on every transition.
        json_serializer=_encode_json,
        json_deserializer=msgspec.json.decode,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        connect_args=connect_args,
    )


async def transaction_lock(conn: AsyncConnection, key: str, /) -> None:
    """Wait for and hold, until ``conn``'s transaction ends, the database-wide advisory lock named
    ``key``: transactions (of this process or of other replicas) taking the same key run one after
    the other. Take it in its own statement, before the reads it guards: a statement's snapshot is
    taken when the statement starts."""
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(key, 0))))


async def ensure_database(url: str, /) -> bool:
    """Create the database named in ``url`` if it does not exist; return whether it was created.

    Connects to the server's ``postgres`` database with the same credentials. Several replicas racing
    here are fine: the loser sees ``DuplicateDatabaseError`` and moves on.
    """
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise ValueError("the database URL names no database")
    admin = parsed.set(drivername="postgresql", database="postgres")
    connect: Any = getattr(asyncpg, "connect")  # noqa: B009 - asyncpg ships no type information
    conn: Any = await connect(admin.render_as_string(hide_password=False))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except _DUPLICATE_DATABASE:
            return False
        logger.info("created database %s", name)
        return True
    finally:
        await conn.close()


@dataclass(slots=True)
class OutboxMessage:
    """One message queued in a transaction's outbox; ``id`` is its row id once written."""

    tenant_id: str
    subject: str
    payload: bytes
    headers: dict[str, str]
    msg_id: str
    ordering_key: str
    id: int | None = None


@dataclass(frozen=True, slots=True)
class CommittedOutbox:
    """What a committed transaction wrote to the outbox, handed to the relay right after the commit.

    ``older`` are the ids of the unsent rows of the same ordering keys that the transaction saw when
    it wrote (rows of earlier transactions): the relay publishes ``messages`` at once only when it
    knows every one of those (it is publishing them itself), which keeps each key in order.
    """

    messages: list[OutboxMessage]
    older: list[int]


class SentMarks(Protocol):
    """Rows the relay published and has not yet marked sent, lent to a unit of work's outbox statement
    (:data:`OUTBOX_WRITE_CTES` marks them), which spares the relay a statement and a commit of its own.

    Every id lent is handed back with :meth:`settle`: ``written`` once the statement that marked it
    committed, not ``written`` when it did not (rolled back, failed, or never sent), for the relay to
    mark itself.
    """

    def lend(self) -> list[int]: ...

    def settle(self, ids: Sequence[int], /, *, written: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxWrite:
    """What one statement with :data:`OUTBOX_WRITE_CTES` writes (:meth:`UnitOfWork.take_outbox`)."""

    messages: list[OutboxMessage]
    """The unit's queued messages, inserted."""
    sent: list[int]
    """Rows the relay published meanwhile (any tenant's: the table is shared), marked sent."""


# Written in the same statement as the transaction's last write (a CTE fragment, so one round trip):
# the rows, with ids ascending in the order they were published (WITH ORDINALITY ... ORDER BY), and
# the unsent rows of the same keys that were there before (the statement's snapshot does not see its
# own inserts, nor its own marks: a row marked here may still be listed as older, which the relay
# knows as published). The relay's published rows are marked sent by the same statement
# (``outbox_marked``), except those another transaction has locked (another replica's pass): the
# statement does not wait for them, the relay marks them itself. Parameters are arrays (one prepared
# statement for any number of rows), see :func:`outbox_parameters`.
OUTBOX_WRITE_CTES = f"""
outbox_added AS (
    INSERT INTO {PLATFORM_SCHEMA}.outbox (tenant_id, subject, payload, headers, msg_id, ordering_key)
    SELECT tenant_id, subject, payload, headers, msg_id, ordering_key FROM unnest(
        CAST(:o_tenant AS text[]), CAST(:o_subject AS text[]), CAST(:o_payload AS bytea[]),
        CAST(:o_headers AS jsonb[]), CAST(:o_msg_id AS text[]), CAST(:o_key AS text[])
    ) WITH ORDINALITY AS o(tenant_id, subject, payload, headers, msg_id, ordering_key, n)
    ORDER BY n
    RETURNING id
), outbox_older AS (
    SELECT id FROM {PLATFORM_SCHEMA}.outbox
    WHERE sent_at IS NULL AND ordering_key = ANY(CAST(:o_key AS text[]))
), outbox_marked AS (
    UPDATE {PLATFORM_SCHEMA}.outbox SET sent_at = now()
    WHERE id IN (
        SELECT id FROM {PLATFORM_SCHEMA}.outbox
        WHERE id = ANY(CAST(:o_sent AS bigint[])) AND sent_at IS NULL
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)"""  # noqa: S608 - a constant schema name, never input
OUTBOX_WRITE_COLUMNS = (
    "(SELECT array_agg(id ORDER BY id) FROM outbox_added) AS outbox_ids, "
    "(SELECT array_agg(id) FROM outbox_older) AS outbox_older, "
    "(SELECT array_agg(id) FROM outbox_marked) AS outbox_marked"
)

_ASYNCPG_DIALECT = asyncpg_dialect()


class DriverStatement:
    """A statement sent straight on the asyncpg connection beneath a SQLAlchemy connection: for the
    hot statements, the ones that write everything a unit of work changed.

    SQLAlchemy's execution layer (the compiled-cache lookup, parameter processing, the cursor
    adapter and its greenlet switches, the result objects) cost 0.3-0.4 ms of client CPU per call on
    the orchestrator's start and result statements, more than asyncpg itself (bench/README,
    "Fourteenth pass"). Here the SQL is compiled once, with asyncpg's ``$n`` placeholders, and the
    parameters are passed by name.

    The statement belongs to the connection's transaction when there is one (``conn.begin()``, or
    a statement that began one): SQLAlchemy sends its ``BEGIN`` only with its first statement, so when
    none was sent yet, a ``SELECT 1`` through SQLAlchemy sends it first. On an ``AUTOCOMMIT``
    connection, or one that began no transaction, the statement is its own. Errors are asyncpg's
    (``sqlstate`` on a Postgres error; :func:`wf_platform.problems.is_unavailable` knows the
    connection errors). A connection left closed, or in an unknown state (a timeout), is invalidated,
    so that the pool does not hand it out again.
    """

    __slots__ = ("names", "sql")

    def __init__(self, statement: sa.ClauseElement, /) -> None:
        compiled = statement.compile(dialect=_ASYNCPG_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    async def fetchrow(self, conn: AsyncConnection, parameters: dict[str, Any], /) -> Any:
        """The statement's first row (an ``asyncpg.Record``: columns by name), or ``None``."""
        return await self._send(conn, "fetchrow", parameters)

    async def execute(self, conn: AsyncConnection, parameters: dict[str, Any], /) -> None:
        """Run the statement, discarding what it returns."""
        await self._send(conn, "execute", parameters)

    async def _send(self, conn: AsyncConnection, method: str, parameters: dict[str, Any], /) -> Any:
        driver = await _driver(conn)
        try:
            return await getattr(driver, method)(self.sql, *[parameters[name] for name in self.names])
        except BaseException as exc:
            await _invalidate_unless_usable(conn, driver, exc)
            raise


_BEGIN_NOW = sa.text("SELECT 1")


async def _driver(conn: AsyncConnection, /) -> Any:
    """The asyncpg connection, in the SQLAlchemy connection's transaction if it has one."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if (
        conn.in_transaction()
        and not driver.is_in_transaction()
        and conn.sync_connection is not None
        and conn.sync_connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    ):
        await conn.execute(_BEGIN_NOW)  # SQLAlchemy sends BEGIN before it
    return driver


async def _invalidate_unless_usable(conn: AsyncConnection, driver: Any, exc: BaseException, /) -> None:
    # An error the server reported leaves the connection usable (a failed transaction is rolled
    # back by its unit); anything else (closed, timed out, cancelled mid-statement) may not.
    if isinstance(exc, asyncpg.PostgresError) and not driver.is_closed():
        return
    await conn.invalidate()


_WRITE_OUTBOX = DriverStatement(sa.text(f"WITH {OUTBOX_WRITE_CTES} SELECT {OUTBOX_WRITE_COLUMNS}"))

OutboxColumns = tuple[Sequence[int] | None, Sequence[int] | None, Sequence[int] | None]
"""What :meth:`UnitOfWork.outbox_written` takes after ``write``: the rows' ids, the older unsent ids,
the ids marked sent."""


def outbox_columns(row: Any, /) -> OutboxColumns:
    """The :data:`OUTBOX_WRITE_COLUMNS` of a row (:meth:`DriverStatement.fetchrow`), in
    :meth:`UnitOfWork.outbox_written`'s order."""
    return row["outbox_ids"], row["outbox_older"], row["outbox_marked"]


def outbox_parameters(write: OutboxWrite, /) -> dict[str, list[Any]]:
    """The bind parameters of :data:`OUTBOX_WRITE_CTES` (headers as JSON text: asyncpg's jsonb
    codec takes text)."""
    messages = write.messages
    return {
        "o_tenant": [m.tenant_id for m in messages],
        "o_subject": [m.subject for m in messages],
        "o_payload": [m.payload for m in messages],
        "o_headers": [_encode_json(m.headers) for m in messages],
        "o_msg_id": [m.msg_id for m in messages],
        "o_key": [m.ordering_key for m in messages],
        "o_sent": write.sent,
    }


class UnitOfWork:
    """One tenant transaction: the connection (tenant tables mapped) and the outbox.

    Outbox rows are collected while the transaction runs and written by :meth:`flush` with one
    statement just before the commit (one round trip however many messages a transition causes),
    unless the caller took them (:meth:`take_outbox`) to write them in a statement of its own
    (with :data:`OUTBOX_WRITE_CTES`; it then reports the result with :meth:`outbox_written`).
    That statement also marks sent the rows the relay published meanwhile (:class:`SentMarks`).

    Attributes:
        conn: the connection; tenant tables resolve to the tenant's schema.
        tenant: whose transaction this is.
    """

    def __init__(self, conn: AsyncConnection, tenant: TenantId, /, *, marks: SentMarks | None = None) -> None:
        self.conn = conn
        self.tenant = tenant
        self.outbox_rows = 0
        self._queued: list[OutboxMessage] = []
        self._written: list[OutboxMessage] = []
        self._older: list[int] = []
        self._after_commit: list[Callable[[], object]] = []
        self._marks = marks
        self._lent: list[int] = []
        """Marks lent to a statement that has not returned (or was never sent)."""
        self._marked: list[int] = []
        """Marks written by a statement of this unit that returned (committed with the unit)."""

    def after_commit(self, callback: Callable[[], object], /) -> None:
        """Call ``callback`` once this unit's writes committed (not if they roll back or fail): for
        counting what a transition did, which may be applied again after a conflict."""
        self._after_commit.append(callback)

    def run_after_commit(self) -> None:
        """Run the :meth:`after_commit` callbacks (by the unit's opener, once it committed)."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    async def publish(
        self,
        subject: str,
        payload: bytes,
        /,
        *,
        msg_id: str,
        ordering_key: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue a message in the outbox; it is sent after, and only if, this transaction commits.

        Args:
            subject: the NATS subject (must carry this tenant).
            payload: the message body (UTF-8 JSON).
            msg_id: the stable ``Nats-Msg-Id`` (JetStream drops a republished duplicate).
            ordering_key: messages with the same key are published in insertion order (e.g. the
                instance id, or the definition name).
            headers: extra headers; the current ``traceparent`` is added automatically.
        """
        from wf_platform.telemetry import inject_trace_headers

        self._queued.append(
            OutboxMessage(
                tenant_id=self.tenant,
                subject=subject,
                payload=payload,
                headers=inject_trace_headers(dict(headers or {})),
                msg_id=msg_id,
                ordering_key=f"{self.tenant}:{ordering_key}",
            )
        )
        self.outbox_rows += 1

    @property
    def has_queued_outbox(self) -> bool:
        """Outbox rows are queued that no statement has written yet."""
        return bool(self._queued)

    @property
    def wrote_outbox(self) -> bool:
        """A statement of this unit wrote outbox rows (:meth:`outbox_written`)."""
        return bool(self._written)

    def take_outbox(self) -> OutboxWrite:
        """The queued outbox messages, which the caller now writes in this transaction (with
        :data:`OUTBOX_WRITE_CTES`), and the relay's published rows for the same statement to mark."""
        queued, self._queued = self._queued, []
        sent = self._marks.lend() if self._marks is not None else []
        self._lent.extend(sent)
        return OutboxWrite(queued, sent)

    def outbox_written(
        self,
        write: OutboxWrite,
        ids: Sequence[int] | None,
        older: Sequence[int] | None,
        marked: Sequence[int] | None,
    ) -> None:
        """Record what the statement with :data:`OUTBOX_WRITE_CTES` returned for ``write``: its
        columns, in order (the rows' ids, the older unsent ids, the ids it marked sent)."""
        messages = write.messages
        if messages and (ids is None or len(ids) != len(messages)):
            raise RuntimeError("the outbox statement did not return an id per message")
        for message, row_id in zip(messages, ids or (), strict=False):
            message.id = row_id
        self._written.extend(messages)
        self._older.extend(older or ())
        if marked:
            done = set(marked)
            self._lent = [i for i in self._lent if i not in done]
            self._marked.extend(marked)

    def settle_marks(self, *, committed: bool) -> None:
        """Hand the lent marks back to the relay (by the unit's opener, once the unit ended): the
        ones a returned statement wrote are done if the unit ``committed``; the rest it marks itself."""
        if self._marks is None:
            return
        done, back = (self._marked, self._lent) if committed else ([], self._lent + self._marked)
        self._marked, self._lent = [], []
        if done:
            self._marks.settle(done, written=True)
        if back:
            self._marks.settle(back, written=False)

    async def flush(self) -> None:
        """Write the queued outbox rows, in the order they were published (ids ascend with it)."""
        if not self._queued:
            return
        write = self.take_outbox()
        row = await _WRITE_OUTBOX.fetchrow(self.conn, outbox_parameters(write))
        self.outbox_written(write, *outbox_columns(row))

    def committed(self) -> CommittedOutbox:
        """The outbox rows written (after the commit: hand them to the relay). An earlier statement
        of this same transaction is not "older": its rows go with this commit."""
        own = {m.id for m in self._written}
        return CommittedOutbox(self._written, [i for i in self._older if i not in own])


class TenantDatabase:
    """Opens units of work for one tenant; the tenant must already be provisioned (see the gate)."""

    def __init__(
        self,
        engine: AsyncEngine,
        tenant: TenantId,
        /,
        *,
        on_outbox_commit: Callable[[CommittedOutbox], None],
        marks: SentMarks | None = None,
    ) -> None:
        self.engine = engine
        self.tenant = tenant
        self.schema = tenant_schema(tenant)
        self._on_outbox_commit = on_outbox_commit
        self._marks = marks

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[UnitOfWork]:
        """A transaction in the tenant's schema; commits on normal exit, rolls back on an exception."""
        async with self.engine.connect() as conn:
            await conn.execution_options(schema_translate_map={TENANT_SCHEMA: self.schema})
            uow = UnitOfWork(conn, self.tenant, marks=self._marks)
            try:
                async with conn.begin():
                    yield uow
                    await uow.flush()
            except BaseException:
                uow.settle_marks(committed=False)
                raise
            uow.settle_marks(committed=True)
        if uow.outbox_rows:
            self._on_outbox_commit(uow.committed())
        uow.run_after_commit()

    @asynccontextmanager
    async def single_statement(self) -> AsyncGenerator[UnitOfWork]:
        """A unit of work without a transaction block: it writes everything, its outbox rows
        included (:data:`OUTBOX_WRITE_CTES`, :meth:`UnitOfWork.take_outbox`), with one statement,
        which commits by itself. Two round trips fewer than :meth:`transaction` (no BEGIN, no
        COMMIT). Whatever it reads first is not locked: the statement must check what it relies on
        and fail as a whole otherwise. Outbox rows still queued at the end are refused
        (:class:`RuntimeError`): they would need a second commit.
        """
        async with self.engine.connect() as conn:
            await conn.execution_options(
                isolation_level="AUTOCOMMIT", schema_translate_map={TENANT_SCHEMA: self.schema}
            )
            uow = UnitOfWork(conn, self.tenant, marks=self._marks)
            try:
                yield uow
                if uow.has_queued_outbox:
                    raise RuntimeError("outbox rows queued but not written by the unit's statement")
                uow.run_after_commit()
            finally:
                # The statement that wrote them committed them, whatever happened after it.
                uow.settle_marks(committed=True)
                if uow.wrote_outbox:
                    self._on_outbox_commit(uow.committed())
