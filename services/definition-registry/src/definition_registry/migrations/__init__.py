"""Alembic scripts of a tenant schema ``t_<tenant>`` of the registry (run by wf_platform per tenant)."""
