"""The instance API's contract: idempotent starts, errors, tenancy, roles, listing."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # pyright: ignore[reportMissingTypeStubs]

from wf_platform.tenancy import TenantId, tenant_schema

from .conftest import Suite, ok


def one_step(name: str = "api", version: str = "1.0.0") -> dict[str, Any]:
    return {"name": name, "version": version, "steps": {"a": {"type": "machine", "step_type": "api.step"}}}


async def test_same_idempotency_key_and_body_give_the_same_instance_even_concurrently(suite: Suite) -> None:
    await suite.register(one_step())
    headers = suite.headers() | {"Idempotency-Key": "order-42"}
    body = {"definition": "api", "input": {"order": 42}}
    responses = await asyncio.gather(
        *(suite.api.post("/v1/instances", json=body, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (
        await suite.api.get("/v1/instances", params={"definition": "api"}, headers=suite.headers())
    ).json()
    assert len(listed["items"]) == 1
    other = await suite.api.post("/v1/instances", json=body | {"input": {"order": 43}}, headers=headers)
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"


async def test_version_resolution_latest_by_semver_and_a_running_instance_keeps_its_version(
    suite: Suite,
) -> None:
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        await suite.register(one_step(version=version))
    latest = await suite.start("api")
    assert latest["version"] == "1.10.0"
    pinned = await suite.start("api", version="1.2.0")
    assert pinned["version"] == "1.2.0"
    await suite.register(one_step(version="2.0.0"))
    await suite.worker("api.step", ok())
    done = await suite.wait_status(pinned["id"], "completed")
    assert done["version"] == "1.2.0"


async def test_start_errors_are_clear(suite: Suite) -> None:
    await suite.register(one_step())
    missing = await suite.api.post(
        "/v1/instances", json={"definition": "nope", "input": {}}, headers=suite.headers()
    )
    assert missing.status_code == 422 and missing.json()["code"] == "definition_not_found"
    owned = await suite.api.post(
        "/v1/instances",
        json={"definition": "api", "input": {}, "status": "completed"},
        headers=suite.headers(),
    )
    assert owned.status_code == 400, owned.text  # server-owned fields are refused, not ignored
    huge = await suite.api.post(
        "/v1/instances", json={"definition": "api", "input": {"blob": "x" * 300_000}}, headers=suite.headers()
    )
    assert huge.status_code == 413
    deprecated = await suite.registry.post(
        "/v1/definitions/api/versions/1.0.0/deprecate", headers=suite.headers()
    )
    assert deprecated.status_code == 200, deprecated.text
    refused = await suite.api.post(
        "/v1/instances", json={"definition": "api", "version": "1.0.0", "input": {}}, headers=suite.headers()
    )
    assert refused.status_code == 422 and refused.json()["code"] == "definition_deprecated"


async def test_another_tenants_instance_is_not_found_and_roles_are_enforced(suite: Suite) -> None:
    await suite.register(one_step())
    started = await suite.start("api")
    stranger = suite.headers(tenant="globex_corp")
    for path in ("", "/history", "/graph"):
        response = await suite.api.get(f"/v1/instances/{started['id']}{path}", headers=stranger)
        assert response.status_code == 404, (path, response.text)
    cancel = await suite.api.post(f"/v1/instances/{started['id']}/cancel", json={}, headers=stranger)
    assert cancel.status_code == 404
    reader = suite.headers(roles=("instances:read",))
    assert (await suite.api.get(f"/v1/instances/{started['id']}", headers=reader)).status_code == 200
    assert (
        await suite.api.post(f"/v1/instances/{started['id']}/cancel", json={}, headers=reader)
    ).status_code == 403
    assert (await suite.api.get(f"/v1/instances/{started['id']}")).status_code == 401
    assert (await suite.api.get("/v1/instances/not-a-uuid", headers=suite.headers())).status_code == 404


async def test_list_filters_paginates_and_graph_shows_state(suite: Suite) -> None:
    await suite.register(one_step())
    ids = [(await suite.start("api", business_key=f"bk-{i % 2}"))["id"] for i in range(5)]
    page = (await suite.api.get("/v1/instances", params={"limit": 2}, headers=suite.headers())).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    seen = [item["id"] for item in page["items"]]
    while page["next_cursor"]:
        page = (
            await suite.api.get(
                "/v1/instances", params={"limit": 2, "cursor": page["next_cursor"]}, headers=suite.headers()
            )
        ).json()
        seen += [item["id"] for item in page["items"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    keyed = (
        await suite.api.get("/v1/instances", params={"business_key": "bk-0"}, headers=suite.headers())
    ).json()
    assert len(keyed["items"]) == 3
    bad = await suite.api.get("/v1/instances", params={"cursor": "garbage!"}, headers=suite.headers())
    assert bad.status_code == 400
    graph = (
        await suite.api.get(
            f"/v1/instances/{ids[0]}/graph", params={"format": "mermaid"}, headers=suite.headers()
        )
    ).json()
    assert graph["mermaid"].startswith("flowchart TD") and "class n_a active" in graph["mermaid"]


async def test_a_starter_without_definitions_read_can_start_what_it_may_start(suite: Suite) -> None:
    await suite.register(one_step())
    starter = suite.headers(roles=("instances:write",))
    response = await suite.api.post("/v1/instances", json={"definition": "api", "input": {}}, headers=starter)
    assert response.status_code == 201, response.text
    nobody = suite.headers(roles=("tasks:work",))
    refused = await suite.api.post("/v1/instances", json={"definition": "api", "input": {}}, headers=nobody)
    assert refused.status_code == 403


async def test_instance_pages_keep_room_for_updates_on_the_page(suite: Suite) -> None:
    """Tenant migration 0002: instances are updated on every step; fillfactor 70 keeps those updates
    on the row's page (no index writes)."""
    await suite.register(one_step())
    await suite.start("api")
    conn = await asyncpg.connect(
        suite.settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        options = await conn.fetchval(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname = 'instances'",
            tenant_schema(TenantId(suite.tenant)),
        )
    finally:
        await conn.close()
    assert options == ["fillfactor=70"]
