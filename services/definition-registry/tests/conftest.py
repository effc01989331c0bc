"""Registry test fixtures: the app on a fresh database and the session's nats-server."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from definition_registry import Settings, create_app
from wf_platform.testing import SigningKeys, bearer, unique_tenant

ALL_ROLES = ("definitions:read", "definitions:write")


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture
def settings(fresh_database: str, nats_url: str, keys: SigningKeys) -> Settings:
    return Settings(
        database_url=fresh_database,
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=4,
        tenant_cache_seconds=30,
        outbox_poll_seconds=0.5,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def make_client(settings: Settings) -> Callable[..., AsyncTestClient[Litestar]]:
    """A client for an app with some settings changed."""

    def factory(**changes: Any) -> AsyncTestClient[Litestar]:
        return AsyncTestClient(create_app(dataclasses.replace(settings, **changes)))

    return factory


@pytest.fixture
def tenant() -> str:
    return unique_tenant("acme")


@pytest.fixture
def auth(keys: SigningKeys, tenant: str) -> dict[str, str]:
    """Headers of a caller of ``tenant`` with both definition roles."""
    return bearer(keys.token(tenant=tenant, sub="user-1", roles=ALL_ROLES))


def definition(
    name: str = "order", version: str = "1.0.0", *, description: str = "An order", steps: int = 2
) -> dict[str, Any]:
    """A valid wire-form definition with a chain of machine steps."""
    ids = [f"s{i}" for i in range(steps)]
    return {
        "name": name,
        "version": version,
        "description": description,
        "steps": {i: {"type": "machine", "step_type": "payments.charge"} for i in ids},
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    }


@pytest.fixture
def make_definition() -> Callable[..., dict[str, Any]]:
    return definition
