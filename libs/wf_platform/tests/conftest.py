"""Fixtures for the plumbing tests: a tiny app on the platform, with real Postgres and nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from wf_platform import TENANT_SCHEMA, Caller, PlatformConfig, PlatformPlugin, ServiceSettings, TenantDatabase
from wf_platform.auth import requires_role
from wf_platform.testing import SigningKeys

NOTES_MIGRATIONS = str(Path(__file__).parent / "notes_migrations")

notes = sa.Table(
    "notes",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("body", sa.Text),
    schema=TENANT_SCHEMA,
)


@post("/v1/notes", guards=[requires_role("notes:write")])
async def add_note(
    data: JSONBody[dict[str, str]],
    tenant_db: NamedDependency[TenantDatabase],
    caller: NamedDependency[Caller],
) -> dict[str, Any]:
    async with tenant_db.transaction() as uow:
        note_id = (
            await uow.conn.execute(notes.insert().values(body=data["body"]).returning(notes.c.id))
        ).scalar_one()
        await uow.publish(
            f"wf.events.{caller.tenant}.note.added",
            data["body"].encode(),
            msg_id=f"note:{caller.tenant}:{note_id}",
            ordering_key="notes",
        )
    return {"id": note_id}


@get("/v1/notes", guards=[requires_role("notes:read")])
async def list_notes(tenant_db: NamedDependency[TenantDatabase]) -> list[str]:
    async with tenant_db.transaction() as uow:
        return list((await uow.conn.execute(sa.select(notes.c.body).order_by(notes.c.id))).scalars())


@pytest.fixture(scope="session")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture
def settings(fresh_database: str, nats_url: str, keys: SigningKeys) -> ServiceSettings:
    return ServiceSettings(
        service_name="platform-test",
        database_url=fresh_database,
        nats_url=nats_url,
        jwt_public_key_pem=keys.public_pem,
        db_pool_size=4,
        tenant_cache_seconds=0,
        outbox_poll_seconds=0.2,
        max_body_bytes=4096,
    )


AppFactory = Callable[..., Litestar]


@pytest.fixture
def make_app(settings: ServiceSettings) -> AppFactory:
    def factory(**config: Any) -> Litestar:
        options: dict[str, Any] = {"settings": settings, "tenant_migrations": NOTES_MIGRATIONS, **config}
        return Litestar(
            route_handlers=[add_note, list_notes], plugins=[PlatformPlugin(PlatformConfig(**options))]
        )

    return factory


@pytest.fixture
async def client(make_app: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(make_app()) as test_client:
        yield test_client


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[Any]:
    import nats

    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.drain()
