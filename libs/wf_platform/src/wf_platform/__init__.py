"""Shared service plumbing: settings, JWT auth, tenancy, database, NATS, outbox, telemetry, problems.

Modules (each small and typed; import from them directly for the less common names):

- :mod:`~wf_platform.settings` ``ServiceSettings`` (frozen, ``<PREFIX>_*`` + ``OTEL_*``)
- :mod:`~wf_platform.auth` JWT verification, ``Caller``, ``requires_role``
- :mod:`~wf_platform.devkeys` the dev key pair and token minting (``make dev``, ``wf token``)
- :mod:`~wf_platform.tenancy` tenant ids and schema names
- :mod:`~wf_platform.db` engine, shared tables, tenant units of work
- :mod:`~wf_platform.migrations` Alembic per schema
- :mod:`~wf_platform.tenants` provisioning on first use, status
- :mod:`~wf_platform.bus` the ``EventBus`` port, NATS adapter, in-memory fake
- :mod:`~wf_platform.streams` idempotent JetStream provisioning (``WF_EVENTS``)
- :mod:`~wf_platform.outbox` the relay
- :mod:`~wf_platform.telemetry`, :mod:`~wf_platform.metrics`, :mod:`~wf_platform.logs`
- :mod:`~wf_platform.problems` RFC 9457 problem details; :mod:`~wf_platform.limits` document limits
- :mod:`~wf_platform.health` health routes; :mod:`~wf_platform.plugin` ``PlatformPlugin``

Names are imported lazily (``wf token`` needs the dev keys, not Litestar and SQLAlchemy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wf_platform.auth import Caller, InvalidTokenError, JwtVerifier, requires_role
    from wf_platform.bus import EventBus, InMemoryEventBus, NatsEventBus, PublishError
    from wf_platform.db import TENANT_SCHEMA, TenantDatabase, UnitOfWork
    from wf_platform.devkeys import DevKeyPair, ensure_dev_keys, mint_token
    from wf_platform.limits import parse_document
    from wf_platform.outbox import OutboxRelay
    from wf_platform.plugin import Platform, PlatformConfig, PlatformPlugin, get_platform, migrate
    from wf_platform.problems import (
        ConflictError,
        FieldError,
        ForbiddenError,
        NotFoundError,
        ProblemError,
        UnauthorizedError,
        UnprocessableError,
    )
    from wf_platform.settings import ServiceSettings, TelemetrySettings
    from wf_platform.streams import WF_EVENTS, StreamSpec, UnsafeStreamError, ensure_stream
    from wf_platform.tenancy import TenantId, tenant_schema, validate_tenant_id

__all__ = [
    "TENANT_SCHEMA",
    "WF_EVENTS",
    "Caller",
    "ConflictError",
    "DevKeyPair",
    "EventBus",
    "FieldError",
    "ForbiddenError",
    "InMemoryEventBus",
    "InvalidTokenError",
    "JwtVerifier",
    "NatsEventBus",
    "NotFoundError",
    "OutboxRelay",
    "Platform",
    "PlatformConfig",
    "PlatformPlugin",
    "ProblemError",
    "PublishError",
    "ServiceSettings",
    "StreamSpec",
    "TelemetrySettings",
    "TenantDatabase",
    "TenantId",
    "UnauthorizedError",
    "UnitOfWork",
    "UnprocessableError",
    "UnsafeStreamError",
    "ensure_dev_keys",
    "ensure_stream",
    "get_platform",
    "migrate",
    "mint_token",
    "parse_document",
    "requires_role",
    "tenant_schema",
    "validate_tenant_id",
]

_LAZY: dict[str, str] = {
    "Caller": "wf_platform.auth",
    "ConflictError": "wf_platform.problems",
    "DevKeyPair": "wf_platform.devkeys",
    "EventBus": "wf_platform.bus",
    "FieldError": "wf_platform.problems",
    "ForbiddenError": "wf_platform.problems",
    "InMemoryEventBus": "wf_platform.bus",
    "InvalidTokenError": "wf_platform.auth",
    "JwtVerifier": "wf_platform.auth",
    "NatsEventBus": "wf_platform.bus",
    "NotFoundError": "wf_platform.problems",
    "OutboxRelay": "wf_platform.outbox",
    "Platform": "wf_platform.plugin",
    "PlatformConfig": "wf_platform.plugin",
    "PlatformPlugin": "wf_platform.plugin",
    "ProblemError": "wf_platform.problems",
    "PublishError": "wf_platform.bus",
    "ServiceSettings": "wf_platform.settings",
    "StreamSpec": "wf_platform.streams",
    "TENANT_SCHEMA": "wf_platform.db",
    "TelemetrySettings": "wf_platform.settings",
    "TenantDatabase": "wf_platform.db",
    "TenantId": "wf_platform.tenancy",
    "UnauthorizedError": "wf_platform.problems",
    "UnitOfWork": "wf_platform.db",
    "UnprocessableError": "wf_platform.problems",
    "UnsafeStreamError": "wf_platform.streams",
    "WF_EVENTS": "wf_platform.streams",
    "ensure_dev_keys": "wf_platform.devkeys",
    "ensure_stream": "wf_platform.streams",
    "get_platform": "wf_platform.plugin",
    "migrate": "wf_platform.plugin",
    "mint_token": "wf_platform.devkeys",
    "parse_document": "wf_platform.limits",
    "requires_role": "wf_platform.auth",
    "tenant_schema": "wf_platform.tenancy",
    "validate_tenant_id": "wf_platform.tenancy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wf_platform' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
