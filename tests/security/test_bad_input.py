"""Hostile request documents: size limits, nesting, expressions, mass assignment (DESIGN.md §7).

Decisions asserted here:
- Bodies over ``max_body_bytes`` (1 MiB) are 413 whether declared (Content-Length) or streamed.
- Nesting deeper than ``max_json_depth`` (32) is a 422 ``nesting_too_deep`` on every route that takes a
  body, answered quickly (refused before any parser recurses); never a 500 or a RecursionError.
- The character U+0000 (which Postgres cannot store in text or jsonb) is a 422 ``nul_character`` in a
  body and a 400 in a path or query, on every service.
- Server-owned fields in a request body: the orchestrator and the inbox refuse them (400, their
  structs forbid unknown fields); the registry's wire format ignores unknown top-level members, so
  there the fields must have no effect (author is the caller, digest is the content's, no tenant).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wf_platform.testing import unique_tenant

from .conftest import ALL_ROLES, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIB = 1024 * 1024


def one_step(name: str = "bad", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "steps": {"a": {"type": "machine", "step_type": "bad.a"}},
        "edges": [],
        **extra,
    }


async def _instance(stack: Stack, tenant: str) -> str:
    await stack.register(tenant, one_step())
    return (await stack.start(tenant, "bad", {}))["id"]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_bodies_over_one_mib_are_413_on_every_service(stack: Stack, streamed: bool) -> None:
    tenant = unique_tenant("big")
    instance_id = await _instance(stack, tenant)
    task_id = await stack.seed_task(tenant)
    payload = json.dumps({"data": {"blob": "x" * (MIB + 10)}}).encode()
    targets = [
        (stack.registry, "/v1/definitions"),
        (stack.registry, "/v1/definitions/validate"),
        (stack.orchestrator, "/v1/instances"),
        (stack.orchestrator, f"/v1/instances/{instance_id}/signals/go"),
        (stack.inbox, f"/v1/tasks/{task_id}/complete"),
    ]
    for client, path in targets:
        if streamed:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(payload), 64 * 1024):
                    yield payload[start : start + 64 * 1024]

            response = await client.post(
                path, content=chunks(), headers={**stack.headers(tenant), "Content-Type": "application/json"}
            )
        else:
            response = await client.post(
                path, content=payload, headers={**stack.headers(tenant), "Content-Type": "application/json"}
            )
        assert response.status_code == 413, (path, response.status_code, response.text[:300])
        assert response.json()["code"] == "payload_too_large"
    assert (
        await stack.orchestrator.get(f"/v1/instances/{instance_id}", headers=stack.headers(tenant))
    ).json()["data"] == {}


async def test_a_definition_over_its_limit_is_413_and_not_stored(stack: Stack) -> None:
    tenant = unique_tenant("bigdef")
    body = one_step(description="d" * 300_000)  # over 262,144 bytes, under the 1 MiB body limit
    for path in ("/v1/definitions", "/v1/definitions/validate"):
        response = await stack.registry.post(path, json=body, headers=stack.headers(tenant))
        assert response.status_code == 413, response.text[:300]
        assert response.json()["code"] == "document_too_large"
    assert (await stack.registry.get("/v1/definitions", headers=stack.headers(tenant))).json() == {
        "items": []
    }


async def test_start_input_over_the_orchestrators_limit_is_413(stack: Stack) -> None:
    tenant = unique_tenant("biginput")
    await stack.register(tenant, one_step())
    response = await stack.orchestrator.post(
        "/v1/instances",
        json={"definition": "bad", "input": {"blob": "x" * 270_000}},
        headers=stack.headers(tenant),
    )
    assert response.status_code == 413, response.text[:300]
    assert (await stack.orchestrator.get("/v1/instances", headers=stack.headers(tenant))).json()[
        "items"
    ] == []


async def test_signals_cannot_grow_the_context_past_the_orchestrators_limit(stack: Stack) -> None:
    tenant = unique_tenant("bigctx")
    instance_id = await _instance(stack, tenant)
    limit = stack.settings["orchestrator"].max_context_bytes  # 300,000 in this stack
    statuses = []
    for i in range(3):  # 3 x 150 kB > 300 kB
        data = {f"blob{i}": "x" * 150_000}
        path = f"/v1/instances/{instance_id}/signals/go"
        statuses.append(
            (
                await stack.orchestrator.post(path, json={"data": data}, headers=stack.headers(tenant))
            ).status_code
        )
    body = (
        await stack.orchestrator.get(f"/v1/instances/{instance_id}", headers=stack.headers(tenant))
    ).json()
    assert len(json.dumps(body["data"])) <= limit, statuses
    assert 413 in statuses, statuses


async def test_an_expression_over_the_length_limit_is_422(stack: Stack) -> None:
    definition = {
        "name": "expr",
        "version": "1.0.0",
        "steps": {"a": {"type": "machine", "step_type": "e.a"}, "b": {"type": "machine", "step_type": "e.b"}},
        "edges": [
            {"source": "a", "target": "b", "condition": " || ".join(["amount > 1"] * 400)}
        ],  # ~5,600 chars
    }
    response = await stack.registry.post(
        "/v1/definitions", json=definition, headers=stack.headers(unique_tenant())
    )
    assert response.status_code == 422, response.text[:300]
    assert any("edges" in e["path"] for e in response.json()["errors"]), response.text[:500]


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


TARGETS = [
    pytest.param("registry", "/v1/definitions", "json-object", id="registry-register-json"),
    pytest.param("registry", "/v1/definitions/validate", "json-array", id="registry-validate-json"),
    pytest.param("registry", "/v1/definitions", "yaml-flow", id="registry-register-yaml"),
    pytest.param("registry", "/v1/definitions", "yaml-block", id="registry-register-yaml-block"),
    pytest.param("orchestrator", "/v1/instances", "input", id="orchestrator-start"),
    # Litestar decodes a handler's body as JSON whatever its Content-Type says
    pytest.param("orchestrator", "/v1/instances", "input-as-yaml", id="orchestrator-start-labelled-yaml"),
    pytest.param("orchestrator", "signal", "data", id="orchestrator-signal"),
    pytest.param("orchestrator", "retry", "data", id="orchestrator-retry"),
    pytest.param("orchestrator", "cancel", "reason", id="orchestrator-cancel"),
    pytest.param("inbox", "complete", "data", id="inbox-complete"),
    pytest.param("inbox", "complete", "data-as-text", id="inbox-complete-labelled-text"),
    pytest.param("inbox", "assign", "user", id="inbox-assign"),
]


@pytest.mark.parametrize("depth", [40, 10_000])
@pytest.mark.parametrize(("service", "route", "shape"), TARGETS)
async def test_deep_nesting_is_a_quick_4xx(
    stack: Stack, depth: int, service: str, route: str, shape: str
) -> None:
    tenant = unique_tenant("deep")
    instance_id = await _instance(stack, tenant)
    deep = _nested(depth)
    media = "application/json"
    match shape:
        case "json-object":
            text = f'{{"name":"n","version":"1.0.0","steps":{{}},"edges":[],"x":{deep}}}'
        case "json-array":
            text = "[" * depth + "]" * depth
        case "yaml-flow":
            text, media = "[" * depth + "]" * depth, "application/yaml"
        case "yaml-block":  # one space a level: 700 levels stay under the definition size limit
            text, media = (
                "\n".join(" " * i + "a:" for i in range(min(depth, 700))) + " 1",
                "application/yaml",
            )
        case "input":
            text = f'{{"definition":"bad","input":{{"x":{deep}}}}}'
        case "input-as-yaml":
            text, media = f'{{"definition":"bad","input":{{"x":{deep}}}}}', "application/yaml"
        case "reason":
            text = f'{{"reason":"r","x":{deep}}}'
        case "user":
            text = f'{{"user":"bob","x":{deep}}}'
        case "data-as-text":
            text, media = f'{{"data":{{"approved":true,"x":{deep}}}}}', "text/plain"
        case _:
            text = f'{{"data":{{"approved":true,"x":{deep}}}}}'
    task_id = await stack.seed_task(tenant) if service == "inbox" else ""
    path = {
        "signal": f"/v1/instances/{instance_id}/signals/go",
        "retry": f"/v1/instances/{instance_id}/retry",
        "cancel": f"/v1/instances/{instance_id}/cancel",
        "complete": f"/v1/tasks/{task_id}/complete",
        "assign": f"/v1/tasks/{task_id}/assign",
    }.get(route, route)
    headers = stack.headers(tenant, roles=(*ALL_ROLES, "tasks:admin"))
    started = time.monotonic()
    response = await stack.clients[service].post(
        path, content=text.encode(), headers={**headers, "Content-Type": media}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 422, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "nesting_too_deep", response.text[:300]
    assert elapsed < 10, elapsed  # no hang; the YAML parse time has its own test below
    body = (
        await stack.orchestrator.get(f"/v1/instances/{instance_id}", headers=stack.headers(tenant))
    ).json()
    assert body["data"] == {} and body["status"] == "running"
    if task_id:
        task = (await stack.inbox.get(f"/v1/tasks/{task_id}", headers=headers)).json()
        assert task["status"] == "open" and task.get("assignee") is None


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_nesting_up_to_the_limit_is_accepted_and_one_more_level_refused(
    stack: Stack, streamed: bool
) -> None:
    """max_json_depth (32) counts the document's own object: 1 + "data" + 30 levels is the limit."""
    tenant = unique_tenant("limit")
    instance_id = await _instance(stack, tenant)
    path = f"/v1/instances/{instance_id}/signals/go"
    # brackets, quotes and backslashes inside strings are not structure
    tricky = {"s": '[[[{{{\\"\\', "t": "]]]}}}" * 20, "u": "\\" * 40 + '"[' * 40}
    for levels, expected in ((30, 200), (31, 422)):
        data: Any = tricky
        for _ in range(levels - 1):
            data = {"a": data}
        payload = json.dumps({"data": {"x": data}}).encode()
        content: Any = payload
        if streamed:

            async def chunks(payload: bytes = payload) -> AsyncIterator[bytes]:
                for start in range(0, len(payload), 100):
                    yield payload[start : start + 100]

            content = chunks()
        response = await stack.orchestrator.post(
            path, content=content, headers={**stack.headers(tenant), "Content-Type": "application/json"}
        )
        assert response.status_code == expected, (levels, response.text[:300])


async def test_server_owned_fields_in_bodies_are_refused_or_have_no_effect(stack: Stack) -> None:
    tenant, other = unique_tenant("mass"), unique_tenant("massother")
    owned = {
        "id": str(uuid.uuid4()),
        "status": "completed",
        "tenant": other,
        "created_at": "2000-01-01T00:00:00Z",
        "author": "ceo",
        "digest": "sha256:" + "0" * 64,
        "deprecated": True,
    }
    # registry: unknown top-level members are ignored, and they change nothing
    clean = one_step("massdef")
    response = await stack.registry.post(
        "/v1/definitions", json={**clean, **owned}, headers=stack.headers(tenant, sub="alice")
    )
    if response.status_code == 422:  # refused: register the clean one for the rest of the test
        await stack.register(tenant, clean)
    else:
        assert response.status_code == 201, response.text
        record = (
            await stack.registry.get("/v1/definitions/massdef/versions/1.0.0", headers=stack.headers(tenant))
        ).json()
        assert record["author"] == "alice"
        assert record["digest"] != owned["digest"]
        assert record["deprecated"] is False
        assert record["created_at"] != owned["created_at"]
        assert "tenant" not in record["definition"] and "status" not in record["definition"]
        validated = (
            await stack.registry.post("/v1/definitions/validate", json=clean, headers=stack.headers(tenant))
        ).json()
        assert record["digest"] == validated["digest"]  # the extra members are not even part of the content
        assert (await stack.registry.get("/v1/definitions", headers=stack.headers(other))).json() == {
            "items": []
        }
    # orchestrator: refused
    for field, value in owned.items():
        response = await stack.orchestrator.post(
            "/v1/instances",
            json={"definition": "massdef", "input": {}, field: value},
            headers=stack.headers(tenant),
        )
        assert response.status_code == 400, (field, response.text)
    assert (await stack.orchestrator.get("/v1/instances", headers=stack.headers(tenant))).json()[
        "items"
    ] == []
    instance_id = (await stack.start(tenant, "massdef", {}))["id"]
    for path, body in (
        (f"/v1/instances/{instance_id}/cancel", {"reason": "x", "status": "completed"}),
        (f"/v1/instances/{instance_id}/signals/go", {"data": {}, "tenant": other}),
        (f"/v1/instances/{instance_id}/retry", {"data": {}, "id": owned["id"]}),
    ):
        response = await stack.orchestrator.post(path, json=body, headers=stack.headers(tenant))
        assert response.status_code == 400, (path, response.text)
    assert (
        await stack.orchestrator.get(f"/v1/instances/{instance_id}", headers=stack.headers(tenant))
    ).json()["status"] == "running"
    # inbox: refused
    task_id = await stack.seed_task(tenant)
    admin = stack.headers(tenant, roles=("tasks:admin",))
    for path, body in (
        (
            f"/v1/tasks/{task_id}/complete",
            {"data": {"approved": True}, "status": "open", "completed_by": "ceo"},
        ),
        (f"/v1/tasks/{task_id}/assign", {"user": "bob", "tenant": other}),
        (f"/v1/tasks/{task_id}/complete", {"data": {"approved": True}, "id": str(uuid.uuid4())}),
    ):
        response = await stack.inbox.post(path, json=body, headers=admin)
        assert response.status_code == 400, (path, response.text)
    task = (await stack.inbox.get(f"/v1/tasks/{task_id}", headers=admin)).json()
    assert task["status"] == "open" and task.get("assignee") is None


NUL_BODIES = [
    pytest.param(
        "registry", "/v1/definitions", {**one_step("nul"), "description": "a\u0000"}, id="registry-register"
    ),
    pytest.param(
        "registry",
        "/v1/definitions/validate",
        one_step("nul", steps={"a": {"type": "machine", "step_type": "n.a", "description": "\u0000"}}),
        id="registry-validate",
    ),
    pytest.param(
        "orchestrator", "/v1/instances", {"definition": "bad", "input": {"a\u0000": 1}}, id="start-key"
    ),
    pytest.param(
        "orchestrator",
        "/v1/instances",
        {"definition": "bad", "input": {}, "business_key": "k\u0000"},
        id="start-business-key",
    ),
    pytest.param("orchestrator", "signal", {"data": {"a": "x\u0000y"}}, id="signal"),
    pytest.param("orchestrator", "cancel", {"reason": "\u0000"}, id="cancel"),
    pytest.param("inbox", "complete", {"data": {"approved": True, "note": "x\u0000"}}, id="complete"),
    pytest.param("inbox", "assign", {"user": "bob\u0000"}, id="assign"),
]


@pytest.mark.parametrize(("service", "route", "document"), NUL_BODIES)
async def test_nul_characters_in_bodies_are_422_and_change_nothing(
    stack: Stack, service: str, route: str, document: dict[str, Any]
) -> None:
    """Postgres stores no U+0000 in text or jsonb: such input used to fail the statement (a 500)."""
    tenant = unique_tenant("nul")
    instance_id = await _instance(stack, tenant)
    task_id = await stack.seed_task(tenant)
    path = {
        "signal": f"/v1/instances/{instance_id}/signals/go",
        "cancel": f"/v1/instances/{instance_id}/cancel",
        "complete": f"/v1/tasks/{task_id}/complete",
        "assign": f"/v1/tasks/{task_id}/assign",
    }.get(route, route)
    headers = stack.headers(tenant, roles=(*ALL_ROLES, "tasks:admin"))
    response = await stack.clients[service].post(path, json=document, headers=headers)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["code"] == "nul_character"
    instance = (
        await stack.orchestrator.get(f"/v1/instances/{instance_id}", headers=stack.headers(tenant))
    ).json()
    assert instance["data"] == {} and instance["status"] == "running"
    assert (await stack.registry.get("/v1/definitions/nul", headers=headers)).status_code == 404
    # an escaped backslash before "u0000" is not a NUL
    text = json.dumps(document).replace("\\u0000", "\\\\u0000").encode()
    response = await stack.clients[service].post(
        path, content=text, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code < 500 and response.json().get("code") != "nul_character", response.text


async def test_nul_characters_in_yaml_definitions_are_422(stack: Stack) -> None:
    tenant = unique_tenant("nulyaml")
    body = b'name: nul\nversion: 1.0.0\ndescription: "a\\0b"\nsteps:\n  a: {type: machine, step_type: n.a}\n'
    response = await stack.registry.post(
        "/v1/definitions", content=body, headers={**stack.headers(tenant), "Content-Type": "application/yaml"}
    )
    assert response.status_code == 422, response.text[:300]
    assert response.json()["code"] == "nul_character"


@pytest.mark.parametrize(
    ("service", "path", "query"),
    [
        pytest.param("registry", "/v1/definitions/a%00b", {}, id="registry-path"),
        pytest.param("orchestrator", "/v1/instances/a%00b", {}, id="orchestrator-path"),
        pytest.param("orchestrator", "/v1/instances", {"business_key": "a\u0000b"}, id="orchestrator-query"),
        pytest.param("inbox", "/v1/tasks", {"q": "a\u0000b"}, id="inbox-query"),
    ],
)
async def test_nul_characters_in_paths_and_queries_are_400(
    stack: Stack, service: str, path: str, query: dict[str, str]
) -> None:
    response = await stack.clients[service].get(
        path, params=query, headers=stack.headers(unique_tenant("nulq"))
    )
    assert response.status_code == 400, response.text[:300]
    assert response.json()["code"] == "nul_character"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"priority": 10_508_555_259}, id="priority-over-int32"),
        pytest.param({"priority_min": -10_508_555_259}, id="priority-min-under-int32"),
        pytest.param({"priority_min": 101}, id="priority-min-over-100"),
        pytest.param({"due_before": "0001-01-01T00:00:00+14:00"}, id="due-before-year-0-in-utc"),
        pytest.param({"due_after": "9999-12-31T23:59:59-14:00"}, id="due-after-year-10000-in-utc"),
    ],
)
async def test_inbox_filters_the_database_cannot_compare_are_400(stack: Stack, query: dict[str, Any]) -> None:
    """Found by the OpenAPI fuzzing: these were 500s (integer out of range, date value out of range)."""
    response = await stack.inbox.get("/v1/tasks", params=query, headers=stack.headers(unique_tenant("filt")))
    assert response.status_code == 400, response.text[:300]


@pytest.mark.parametrize(
    "start",
    [
        pytest.param({"definition": ""}, id="empty-name"),
        pytest.param({"definition": "bad", "version": ""}, id="empty-version"),
        pytest.param({"definition": "."}, id="dot"),
        pytest.param({"definition": ".."}, id="dotdot"),
        pytest.param({"definition": "bad/versions/1.0.0"}, id="slash"),
        pytest.param({"definition": "bad", "version": "../../../health/live"}, id="version-traversal"),
        pytest.param({"definition": "bad?x=1#"}, id="query"),
    ],
)
async def test_definition_references_never_reshape_the_registry_request(
    stack: Stack, start: dict[str, Any]
) -> None:
    tenant = unique_tenant("ref")
    await stack.register(tenant, one_step())
    response = await stack.orchestrator.post(
        "/v1/instances", json={"input": {}, **start}, headers=stack.headers(tenant)
    )
    assert response.status_code in {400, 404, 422}, (response.status_code, response.text[:300])
