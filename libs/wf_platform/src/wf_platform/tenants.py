"""The tenant registry of one service database: provisioning on first use, status, migrations.

A tenant is provisioned on its first authorised request (or ahead of time by ``python -m <service>
migrate --tenant <id>``): under a transaction-scoped advisory lock on the tenant id, its schema
``t_<tenant>`` is created and migrated with the service's Alembic scripts, and its row in ``wf.tenants``
records the revision. Replicas racing on a new tenant serialise on the lock; the loser finds the work
done. Status (``active``/``suspended``) is cached per process for ``tenant_cache_seconds`` so that an
active tenant costs no query per request; a suspension takes effect within that time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.db import tenants_table, transaction_lock
from wf_platform.migrations import head_revision, migration_lock, upgrade
from wf_platform.problems import ForbiddenError
from wf_platform.tenancy import TenantId, tenant_schema, validate_tenant_id

__all__ = ["TenantRegistry", "TenantStatus"]

logger = logging.getLogger("wf_platform.tenants")

TenantStatus = Literal["active", "suspended"]


class TenantRegistry:
    """Provisions tenants and answers whether one may act (the :class:`~wf_platform.auth.TenantGate`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        /,
        *,
        script_location: str,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_provisioned: Callable[[TenantId], None] | None = None,
    ) -> None:
        self.engine = engine
        self.script_location = script_location
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[TenantId, tuple[TenantStatus, float]] = {}
        self._locks: dict[TenantId, asyncio.Lock] = {}
        self._existing: set[str] = set()
        self._on_provisioned = on_provisioned

    async def ensure_active(self, tenant: TenantId, /) -> None:
        """Provision ``tenant`` if needed; raise a 403 problem if it is suspended."""
        status = await self.status(tenant)
        if status != "active":
            raise ForbiddenError("tenant is suspended", code="tenant_suspended")

    async def exists(self, tenant: str, /) -> bool:
        """Whether the tenant is provisioned here, never provisioning it (messages must not create
        tenants). A tenant once seen stays known: tenants are never deleted."""
        if tenant in self._cache or tenant in self._existing:
            return True
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tenants_table.c.status).where(tenants_table.c.tenant_id == tenant)
                )
            ).first()
        if row is not None:
            self._existing.add(tenant)
        return row is not None

    async def status(self, tenant: TenantId, /) -> TenantStatus:
        """The tenant's status, provisioning it first if it is new or behind on migrations."""
        tenant = validate_tenant_id(tenant)
        cached = self._cache.get(tenant)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tenants_table.c.status, tenants_table.c.schema_revision).where(
                        tenants_table.c.tenant_id == tenant
                    )
                )
            ).first()
        if row is None or row.schema_revision != head_revision(self.script_location):
            status = await self.provision(tenant)
        else:
            status = row.status
        self._cache[tenant] = (status, self._clock() + self._cache_seconds)
        return status

    async def provision(self, tenant: TenantId, /) -> TenantStatus:
        """Create and migrate the tenant's schema (idempotent; safe across replicas)."""
        tenant = validate_tenant_id(tenant)
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock, migration_lock():
            schema = tenant_schema(tenant)
            head = head_revision(self.script_location)
            async with self.engine.begin() as conn:
                await transaction_lock(conn, f"wf.tenant:{tenant}")
                row = (
                    await conn.execute(
                        sa.select(tenants_table.c.status, tenants_table.c.schema_revision).where(
                            tenants_table.c.tenant_id == tenant
                        )
                    )
                ).first()
                if row is not None and row.schema_revision == head:
                    return row.status
                script_location = self.script_location
                await conn.run_sync(
                    lambda sync: upgrade(sync, script_location=script_location, schema=schema)
                )
                stmt = pg_insert(tenants_table).values(
                    tenant_id=tenant, status="active", schema_revision=head
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[tenants_table.c.tenant_id],
                        set_={"schema_revision": head, "updated_at": sa.func.now()},
                    )
                )
                status: TenantStatus = row.status if row is not None else "active"
            logger.info("tenant %s provisioned at revision %s", tenant, head)
            if self._on_provisioned is not None:
                self._on_provisioned(tenant)
            return status

    async def set_status(self, tenant: TenantId, status: TenantStatus, /) -> None:
        """Suspend or reactivate a tenant (provisioning it first if it is new)."""
        tenant = validate_tenant_id(tenant)
        await self.provision(tenant)
        async with self.engine.begin() as conn:
            await conn.execute(
                tenants_table.update()
                .where(tenants_table.c.tenant_id == tenant)
                .values(status=status, updated_at=sa.func.now())
            )
        self._cache.pop(tenant, None)

    async def known_tenants(self) -> list[TenantId]:
        """Every tenant with a row in ``wf.tenants``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(tenants_table.c.tenant_id).order_by(tenants_table.c.tenant_id)
            )
            return [validate_tenant_id(r.tenant_id) for r in rows]

    async def migrate_all(self) -> list[TenantId]:
        """Bring every known tenant's schema to head; return them."""
        tenants = await self.known_tenants()
        for tenant in tenants:
            await self.provision(tenant)
        return tenants

    def forget(self, tenant: TenantId, /) -> None:
        """Drop the cached status of a tenant (tests, admin actions)."""
        self._cache.pop(tenant, None)
