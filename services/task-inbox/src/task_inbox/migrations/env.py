"""Alembic environment: the connection and schema come from :func:`wf_platform.migrations.upgrade`."""

from wf_platform.migrations import run_env

run_env()
