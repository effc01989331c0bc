"""The orchestrator's tables. The only module besides repositories.py that names SQL objects.

Per tenant (schema ``t_<tenant>``, the placeholder :data:`~wf_platform.db.TENANT_SCHEMA`):

- ``instances``: one row per instance; the engine's state as JSONB, a ``revision`` bumped by every
  transition (optimistic concurrency on top of the row lock), the trace context, and the
  idempotency key of the start request;
- ``step_attempts``: one row per dispatched machine step attempt ``(job_id, attempt)``: when, by
  which worker, the outcome and the error (the history route reads it; results find their
  instance through it);
- ``definitions``: the wire form of every definition version an instance of this tenant started on,
  so that a restarted process never needs the registry to continue an instance.

Shared (schema ``orch``, one per database): ``timers``, every tenant's durable timers, so that one
indexed range scan finds everything due however many tenants there are.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from wf_platform.db import TENANT_SCHEMA

__all__ = ["SHARED_SCHEMA", "definitions", "instances", "metadata", "step_attempts", "timers"]

SHARED_SCHEMA = "orch"

metadata = sa.MetaData()

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("business_key", sa.Text, nullable=True),
    sa.Column("state", pg.JSONB, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("trace_id", sa.Text, nullable=True),
    sa.Column("traceparent", sa.Text, nullable=True),
    sa.Column("idempotency_key", sa.Text, nullable=True, unique=True),
    sa.Column("request_digest", sa.Text, nullable=True),
    sa.Column("created_by", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    schema=TENANT_SCHEMA,
)

step_attempts = sa.Table(
    "step_attempts",
    metadata,
    sa.Column("job_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("instance_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("step", sa.Text, nullable=False),
    sa.Column("step_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("worker", sa.Text, nullable=True),
    sa.Column("error", pg.JSONB, nullable=True),
    schema=TENANT_SCHEMA,
)

definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("wire", pg.JSONB, nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    schema=TENANT_SCHEMA,
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("timer_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("instance_id", pg.UUID(as_uuid=False), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    schema=SHARED_SCHEMA,
)
