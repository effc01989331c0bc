"""The platform wired into an app: auth, tenancy, problems, limits, health, metrics, outbox to NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from wf_platform import get_platform
from wf_platform.testing import SigningKeys, bearer, in_app_loop, stream_subject_counts, unique_tenant

AppFactory = Callable[..., Litestar]


def _pg(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_health_metrics_and_schema_need_no_token(client: AsyncTestClient[Litestar]) -> None:
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "nats": "ok"}}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "wf_http_requests_total" in metrics.text
    assert "wf_outbox_lag_seconds" in metrics.text
    assert "wf_event_loop_lag_seconds_bucket" in metrics.text
    schema = await client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/v1/notes" in schema.json()["paths"]


async def test_ready_reports_a_broken_dependency(client: AsyncTestClient[Litestar]) -> None:
    platform = get_platform(client.app)
    assert platform.nats is not None
    in_app_loop(client, platform.nats.close)
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["nats"] != "ok"
    assert ready.json()["checks"]["postgres"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.token"},
    ],
)
async def test_missing_or_bad_token_is_a_generic_401(
    client: AsyncTestClient[Litestar], headers: dict[str, str]
) -> None:
    response = await client.get("/v1/notes", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {
        "type": "urn:wf:problem:unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "code": "unauthorized",
        "detail": "missing or invalid credentials",
    }


async def test_wrong_role_is_403(client: AsyncTestClient[Litestar], keys: SigningKeys) -> None:
    token = keys.token(tenant=unique_tenant(), roles=["notes:read"])
    response = await client.post("/v1/notes", json={"body": "x"}, headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["code"] == "missing_role"


async def test_first_use_provisions_the_tenant_schema(
    client: AsyncTestClient[Litestar], keys: SigningKeys, settings: Any
) -> None:
    tenant = unique_tenant()
    token = keys.token(tenant=tenant, roles=["notes:read", "notes:write"])
    created = await client.post("/v1/notes", json={"body": "hello"}, headers=bearer(token))
    assert created.status_code == 201, created.text
    listed = await client.get("/v1/notes", headers=bearer(token))
    assert listed.json() == ["hello"]
    conn = await asyncpg.connect(_pg(settings.database_url))
    try:
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", f"t_{tenant}"
            )
        }
        assert tables == {"notes", "alembic_version"}
        row = await conn.fetchrow(
            "SELECT status, schema_revision FROM wf.tenants WHERE tenant_id = $1", tenant
        )
        assert dict(row) == {"status": "active", "schema_revision": "n0001"}
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "bad_tenant", ['a"; drop schema x;--', "public", "pg_catalog", "PUBLIC", "t_acme; --"]
)
async def test_hostile_tenant_claims_never_reach_sql(
    client: AsyncTestClient[Litestar], keys: SigningKeys, settings: Any, bad_tenant: str
) -> None:
    claims = keys.claims(tenant=bad_tenant, roles=["notes:read", "notes:write"])
    response = await client.get("/v1/notes", headers=bearer(keys.sign(claims)))
    assert response.status_code == 401
    conn = await asyncpg.connect(_pg(settings.database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM wf.tenants") == 0
        schemas = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        assert schemas == []
    finally:
        await conn.close()


async def test_suspended_tenant_is_403(client: AsyncTestClient[Litestar], keys: SigningKeys) -> None:
    tenant = unique_tenant()
    token = keys.token(tenant=tenant, roles=["notes:read"])
    assert (await client.get("/v1/notes", headers=bearer(token))).status_code == 200
    in_app_loop(client, get_platform(client.app).tenants.set_status, tenant, "suspended")
    response = await client.get("/v1/notes", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["code"] == "tenant_suspended"


async def test_concurrent_first_requests_provision_once(
    client: AsyncTestClient[Litestar], keys: SigningKeys
) -> None:
    tenant = unique_tenant()
    token = keys.token(tenant=tenant, roles=["notes:read"])
    responses = await asyncio.gather(*(client.get("/v1/notes", headers=bearer(token)) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8


async def test_body_limit_is_413_problem(client: AsyncTestClient[Litestar], keys: SigningKeys) -> None:
    token = keys.token(tenant=unique_tenant(), roles=["notes:write"])
    response = await client.post("/v1/notes", json={"body": "x" * 5000}, headers=bearer(token))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "payload_too_large"


async def test_unknown_route_is_a_404_problem(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_bad_body_is_a_400_problem(client: AsyncTestClient[Litestar], keys: SigningKeys) -> None:
    token = keys.token(tenant=unique_tenant(), roles=["notes:write"])
    response = await client.post(
        "/v1/notes", content=b"{not json", headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


async def test_outbox_message_reaches_nats_with_id_and_traceparent(
    client: AsyncTestClient[Litestar], keys: SigningKeys, nats_client: Any
) -> None:
    tenant = unique_tenant()
    token = keys.token(tenant=tenant, roles=["notes:write"])
    created = await client.post("/v1/notes", json={"body": "hi"}, headers=bearer(token))
    note_id = created.json()["id"]
    js = nats_client.jetstream()
    subject = f"wf.events.{tenant}.note.added"
    for _ in range(100):
        if await stream_subject_counts(js, "WF_EVENTS", subject):
            break
        await asyncio.sleep(0.05)
    message = await js.get_last_msg("WF_EVENTS", subject)
    assert message.data == b"hi"
    assert message.headers["Nats-Msg-Id"] == f"note:{tenant}:{note_id}"
    assert message.headers["traceparent"].startswith("00-")
    assert await stream_subject_counts(js, "WF_EVENTS", subject) == {subject: 1}


async def test_fake_bus_app_starts_without_nats(make_app: AppFactory) -> None:
    from wf_platform import InMemoryEventBus

    bus = InMemoryEventBus()
    async with AsyncTestClient(make_app(bus=bus, run_outbox_relay=False)) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200


async def test_unreachable_nats_fails_start_up_instead_of_hanging(settings: Any) -> None:
    import dataclasses

    from wf_platform.bus import connect_nats

    unreachable = dataclasses.replace(settings, nats_url="nats://127.0.0.1:1")
    with pytest.raises(ConnectionError, match="no NATS server reachable"):
        await connect_nats(unreachable, deadline_seconds=0.5)
