"""Alembic scripts of a tenant schema ``t_<tenant>`` of the inbox (run by wf_platform per tenant)."""
