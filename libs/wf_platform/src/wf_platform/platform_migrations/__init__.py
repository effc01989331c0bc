"""Alembic scripts of the shared ``wf`` schema (tenants, outbox)."""
