"""Tenant ids and the schema names derived from them.

A tenant id matches ``^[a-z][a-z0-9_]{2,31}$`` and is not reserved; its schema is ``t_<tenant>`` and
nothing else ever contributes to a schema name. The id is validated where it enters (the verified JWT's
``tenant`` claim) before any SQL runs.
"""

from __future__ import annotations

import re
from typing import NewType

__all__ = [
    "TENANT_ID_PATTERN",
    "InvalidTenantIdError",
    "TenantId",
    "is_valid_tenant_id",
    "tenant_schema",
    "validate_tenant_id",
]

TENANT_ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,31}")

TenantId = NewType("TenantId", str)
"""A validated tenant id."""

# Ids that would read as system objects in logs, subjects or schemas. The ``t_`` prefix already keeps
# tenant schemas apart from Postgres' own; refusing these too makes a confused or hostile token obvious.
_RESERVED = frozenset({"public", "information_schema", "admin", "root", "system", "postgres", "default"})


class InvalidTenantIdError(ValueError):
    """The value is not a usable tenant id."""

    def __init__(self, value: object) -> None:
        self.value = value
        super().__init__(f"invalid tenant id {value!r}")


def is_valid_tenant_id(value: object) -> bool:
    """Whether ``value`` is a usable tenant id."""
    return (
        isinstance(value, str)
        and TENANT_ID_PATTERN.fullmatch(value) is not None
        and value not in _RESERVED
        and not value.startswith("pg_")
    )


def validate_tenant_id(value: object) -> TenantId:
    """Return ``value`` as a :data:`TenantId` or raise :class:`InvalidTenantIdError`."""
    if not is_valid_tenant_id(value):
        raise InvalidTenantIdError(value)
    assert isinstance(value, str)
    return TenantId(value)


def tenant_schema(tenant: TenantId) -> str:
    """The Postgres schema of a tenant: ``t_<tenant>`` (re-validated; safe to quote into DDL)."""
    return f"t_{validate_tenant_id(tenant)}"
