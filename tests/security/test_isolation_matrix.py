"""Every ``/v1`` route of the three services x {own tenant, other tenant, no token, wrong role}.

The routes are enumerated from each app's OpenAPI document: a route added later without a row in
``ROUTES`` fails ``test_every_v1_route_is_in_the_matrix``, so it cannot be forgotten.

Expectations (DESIGN.md §6): another tenant's resource is 404 (never 403, never the resource); a
collection seen by another tenant is 200 without the resource; no token is 401; a token without the
route's role is 403 (before any lookup: also for ids that exist); the own tenant gets 2xx (or the
documented answer: a retry without an incident is 409). Canary strings put in tenant A's definitions,
instance inputs and task titles/context never appear in a body or a log record seen by tenant B.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass(frozen=True)
class World:
    a: str
    b: str
    definition: str
    instance_id: str
    task_id: str
    canaries: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    kind: str
    """``item`` (other tenant: 404), ``collection`` (200 without A's data), ``create`` (see other)."""
    path: Callable[[World], str]
    body: Callable[[World], Any] | None = None
    own: frozenset[int] = frozenset({200})
    other: frozenset[int] = frozenset({404})
    wrong_roles: tuple[tuple[str, ...], ...] = ()
    order: int = 0
    """Own-tenant calls run in this order (changes last)."""


def _definition(name: str, description: str, *, steps: int = 1) -> dict[str, Any]:
    ids = [f"s{i}" for i in range(steps)]
    return {
        "name": name,
        "version": "1.0.0",
        "description": description,
        "steps": {i: {"type": "machine", "step_type": "sec.work"} for i in ids},
        "edges": [{"source": a, "target": b} for a, b in itertools.pairwise(ids)],
    }


CLIENT_LOGGERS = ("httpx", "httpcore")  # the test's own client logs what B sent
NOT_REGISTRY = ("tasks:work", "tasks:admin", "instances:read")
NOT_ORCHESTRATOR = ("definitions:read", "definitions:write", "tasks:work", "tasks:admin")
NOT_INBOX = ("definitions:read", "definitions:write", "instances:read", "instances:write")
DEF = "/v1/definitions/{name}/versions/{version}"

ROUTES: dict[tuple[str, str, str], Route] = {
    # -- definition-registry
    ("registry", "POST", "/v1/definitions"): Route(
        "create",
        lambda w: "/v1/definitions",
        # B registers a definition with A's name and other content: its own, not a 409 (that would
        # reveal that A has one).
        lambda w: _definition(w.definition, "b's own", steps=2),
        own=frozenset({201}),
        other=frozenset({201}),
        wrong_roles=(NOT_REGISTRY, ("definitions:read",)),
        order=1,
    ),
    ("registry", "POST", "/v1/definitions/validate"): Route(
        "create",
        lambda w: "/v1/definitions/validate",
        lambda w: _definition(w.definition, "validate only"),
        other=frozenset({200}),
        wrong_roles=(NOT_REGISTRY, ("definitions:read",)),
    ),
    ("registry", "GET", "/v1/definitions"): Route(
        "collection", lambda w: "/v1/definitions", other=frozenset({200}), wrong_roles=(NOT_REGISTRY,)
    ),
    ("registry", "GET", "/v1/definitions/{name}"): Route(
        "item", lambda w: f"/v1/definitions/{w.definition}", wrong_roles=(NOT_REGISTRY,)
    ),
    ("registry", "GET", "/v1/definitions/{name}/versions"): Route(
        "item", lambda w: f"/v1/definitions/{w.definition}/versions", wrong_roles=(NOT_REGISTRY,)
    ),
    ("registry", "GET", DEF): Route(
        "item", lambda w: f"/v1/definitions/{w.definition}/versions/1.0.0", wrong_roles=(NOT_REGISTRY,)
    ),
    ("registry", "GET", DEF + "/graph"): Route(
        "item",
        lambda w: f"/v1/definitions/{w.definition}/versions/1.0.0/graph?format=json",
        wrong_roles=(NOT_REGISTRY,),
    ),
    ("registry", "POST", DEF + "/deprecate"): Route(
        "item",
        lambda w: f"/v1/definitions/{w.definition}/versions/1.0.0/deprecate",
        wrong_roles=(NOT_REGISTRY, ("definitions:read",)),
        order=9,
    ),
    # -- orchestrator
    ("orchestrator", "POST", "/v1/instances"): Route(
        "create",
        lambda w: "/v1/instances",
        lambda w: {"definition": w.definition, "input": {"x": 1}},
        own=frozenset({201}),
        other=frozenset({422}),  # definition_not_found: B cannot start A's definition
        wrong_roles=(NOT_ORCHESTRATOR, ("instances:read",)),
        order=1,
    ),
    ("orchestrator", "GET", "/v1/instances"): Route(
        "collection", lambda w: "/v1/instances", other=frozenset({200}), wrong_roles=(NOT_ORCHESTRATOR,)
    ),
    ("orchestrator", "GET", "/v1/instances/{instance_id}"): Route(
        "item", lambda w: f"/v1/instances/{w.instance_id}", wrong_roles=(NOT_ORCHESTRATOR,)
    ),
    ("orchestrator", "GET", "/v1/instances/{instance_id}/history"): Route(
        "item", lambda w: f"/v1/instances/{w.instance_id}/history", wrong_roles=(NOT_ORCHESTRATOR,)
    ),
    ("orchestrator", "GET", "/v1/instances/{instance_id}/graph"): Route(
        "item", lambda w: f"/v1/instances/{w.instance_id}/graph", wrong_roles=(NOT_ORCHESTRATOR,)
    ),
    ("orchestrator", "POST", "/v1/instances/{instance_id}/signals/{name}"): Route(
        "item",
        lambda w: f"/v1/instances/{w.instance_id}/signals/go",
        lambda w: {"data": {"from": "signal"}},
        wrong_roles=(NOT_ORCHESTRATOR, ("instances:read",)),
        order=2,
    ),
    ("orchestrator", "POST", "/v1/instances/{instance_id}/retry"): Route(
        "item",
        lambda w: f"/v1/instances/{w.instance_id}/retry",
        lambda w: {"data": {}},
        own=frozenset({409}),  # no open incident
        wrong_roles=(NOT_ORCHESTRATOR, ("instances:read",)),
        order=3,
    ),
    ("orchestrator", "POST", "/v1/instances/{instance_id}/cancel"): Route(
        "item",
        lambda w: f"/v1/instances/{w.instance_id}/cancel",
        lambda w: {"reason": "by the owner"},
        wrong_roles=(NOT_ORCHESTRATOR, ("instances:read",)),
        order=9,
    ),
    # -- task-inbox
    ("inbox", "GET", "/v1/tasks"): Route(
        "collection", lambda w: "/v1/tasks", other=frozenset({200}), wrong_roles=(NOT_INBOX,)
    ),
    ("inbox", "GET", "/v1/tasks/{task_id}"): Route(
        "item", lambda w: f"/v1/tasks/{w.task_id}", wrong_roles=(NOT_INBOX,)
    ),
    ("inbox", "POST", "/v1/tasks/{task_id}/claim"): Route(
        "item", lambda w: f"/v1/tasks/{w.task_id}/claim", wrong_roles=(NOT_INBOX,), order=1
    ),
    ("inbox", "POST", "/v1/tasks/{task_id}/unclaim"): Route(
        "item", lambda w: f"/v1/tasks/{w.task_id}/unclaim", wrong_roles=(NOT_INBOX,), order=2
    ),
    ("inbox", "POST", "/v1/tasks/{task_id}/assign"): Route(
        "item",
        lambda w: f"/v1/tasks/{w.task_id}/assign",
        lambda w: {"user": "user-1"},
        wrong_roles=(NOT_INBOX,),
        order=3,
    ),
    ("inbox", "POST", "/v1/tasks/{task_id}/complete"): Route(
        "item",
        lambda w: f"/v1/tasks/{w.task_id}/complete",
        lambda w: {"data": {"approved": True}},
        wrong_roles=(NOT_INBOX,),
        order=9,
    ),
}


async def v1_operations(stack: Stack) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for service, client in stack.clients.items():
        response = await client.get("/schema/openapi.json")
        assert response.status_code == 200, (service, response.text)
        for path, operations in response.json()["paths"].items():
            if path.startswith("/v1"):
                found |= {(service, method.upper(), path) for method in operations if method != "parameters"}
    return found


async def test_every_v1_route_is_in_the_matrix(stack: Stack) -> None:
    operations = await v1_operations(stack)
    missing = operations - ROUTES.keys()
    assert not missing, f"new /v1 routes without isolation expectations: {sorted(missing)}"
    gone = ROUTES.keys() - operations
    assert not gone, f"matrix rows for routes that no longer exist: {sorted(gone)}"


async def _world(stack: Stack) -> World:
    a, b = f"iso_a_{uuid.uuid4().hex[:10]}", f"iso_b_{uuid.uuid4().hex[:10]}"
    canary = {k: f"CANARY{k}{uuid.uuid4().hex}" for k in ("desc", "input", "bk", "title", "ctx", "tdesc")}
    name = f"secret_{uuid.uuid4().hex[:8]}"
    await stack.register(a, _definition(name, canary["desc"]))
    instance = await stack.start(a, name, {"secret": canary["input"]}, business_key=canary["bk"])
    task_id = await stack.seed_task(
        a,
        title=canary["title"],
        description=canary["tdesc"],
        context={"secret": canary["ctx"]},
        instance_id=instance["id"],
    )
    for client, path in (
        (stack.registry, "/v1/definitions"),
        (stack.orchestrator, "/v1/instances"),
        (stack.inbox, "/v1/tasks"),
    ):  # B exists in every service (provisioned), so "not found" is about A's data, not B's schema
        assert (await client.get(path, headers=stack.headers(b))).status_code == 200
    return World(a, b, name, instance["id"], task_id, tuple(canary.values()))


async def _call(
    stack: Stack, key: tuple[str, str, str], route: Route, world: World, headers: dict[str, str]
) -> httpx.Response:
    service, method, _ = key
    client = stack.clients[service]
    body = route.body(world) if route.body else None
    return await client.request(method, route.path(world), json=body, headers=headers)


async def test_isolation_matrix(stack: Stack) -> None:
    world = await _world(stack)
    seen_by_b: list[str] = []
    failures: list[str] = []

    def expect(
        what: str, key: tuple[str, str, str], response: httpx.Response, allowed: frozenset[int]
    ) -> None:
        if response.status_code not in allowed:
            failures.append(
                f"{what} {key}: {response.status_code} (want {sorted(allowed)}) {response.text[:200]}"
            )

    b_headers = stack.headers(world.b, roles=("admin", *stack_roles()))
    # B registers its own definition under A's name last, so that the reads before it are about A's.
    b_order = sorted(ROUTES.items(), key=lambda kv: kv[0] == ("registry", "POST", "/v1/definitions"))
    for key, route in b_order:
        # another tenant: 404 for A's resources, never 403, never the resource
        response = await _call(stack, key, route, world, b_headers)
        seen_by_b.append(response.text)
        expect("other tenant", key, response, route.other)
        if route.kind == "collection":
            assert world.a not in response.text
        # no token, or no usable credentials: 401
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
            response = await _call(stack, key, route, world, headers)
            seen_by_b.append(response.text)
            expect(f"no token {headers}", key, response, frozenset({401}))
        # A's own user without the route's role: 403, even though the resource exists
        for roles in route.wrong_roles:
            response = await _call(stack, key, route, world, stack.headers(world.a, roles=roles))
            expect(f"wrong role {roles}", key, response, frozenset({403}))
            if response.status_code == 403:
                assert response.json().get("code") == "missing_role", response.text

    # A's resources are untouched by everything B tried, and A still reaches them.
    a_headers = stack.headers(world.a, roles=("admin", *stack_roles()))
    own_texts: list[str] = []
    for key, route in sorted(ROUTES.items(), key=lambda kv: (kv[1].order, kv[0])):
        if route.kind == "create" and key[0] == "registry" and key[2] == "/v1/definitions":
            route = Route(  # noqa: PLW2901 - A registers a new definition of its own
                "create",
                route.path,
                lambda w: _definition(f"{w.definition}_own", "a's second"),
                own=route.own,
            )
        response = await _call(stack, key, route, world, a_headers)
        own_texts.append(response.text)
        expect("own tenant", key, response, route.own)
    own = "\n".join(own_texts)
    for canary in (world.canaries[0], world.canaries[1], world.canaries[3], world.canaries[4]):
        assert canary in own, f"canary {canary} never reached its own tenant: the leak check would be vacuous"

    # Nothing of A's ever reached B: bodies, error bodies, or the logs written for B's requests.
    b_text = "\n".join(seen_by_b)
    b_logs = "\n".join(
        text
        for tenant, logger, text in stack.logs.records
        if tenant == world.b and not logger.startswith(CLIENT_LOGGERS)
    )
    for canary in world.canaries:
        assert canary not in b_text, f"tenant A's canary {canary} in a response to tenant B"
        assert canary not in b_logs, f"tenant A's canary {canary} in a log record of tenant B"
    # Collections filtered on A's values stay empty for B (B names the values here, so these come
    # after the leak check).
    for client, path in (
        (stack.orchestrator, f"/v1/instances?business_key={world.canaries[2]}"),
        (stack.orchestrator, f"/v1/instances?definition={world.definition}"),
        (stack.inbox, f"/v1/tasks?instance_id={world.instance_id}"),
        (stack.inbox, f"/v1/tasks?q={world.canaries[3]}"),
        (stack.inbox, "/v1/tasks?definition=expenses"),
    ):
        response = await client.get(path, headers=b_headers)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["items"] == [], (path, response.text)

    assert not failures, "\n".join(failures)


def stack_roles() -> tuple[str, ...]:
    return (
        "definitions:read",
        "definitions:write",
        "instances:read",
        "instances:write",
        "tasks:work",
        "tasks:admin",
    )


async def test_ids_that_do_not_exist_look_like_other_tenants_ids(stack: Stack) -> None:
    """A random id and another tenant's id get the same answer (status and body shape): no oracle."""
    world_a = f"iso_c_{uuid.uuid4().hex[:10]}"
    b = stack.headers(f"iso_d_{uuid.uuid4().hex[:10]}")
    name = f"oracle_{uuid.uuid4().hex[:8]}"
    await stack.register(world_a, _definition(name, "x"))
    instance = await stack.start(world_a, name, {})
    task = await stack.seed_task(world_a)
    for client, existing, missing in (
        (stack.orchestrator, f"/v1/instances/{instance['id']}", f"/v1/instances/{uuid.uuid4()}"),
        (stack.inbox, f"/v1/tasks/{task}", f"/v1/tasks/{uuid.uuid4()}"),
        (stack.registry, f"/v1/definitions/{name}", f"/v1/definitions/{name}_nope"),
    ):
        first, second = await client.get(existing, headers=b), await client.get(missing, headers=b)
        assert first.status_code == second.status_code == 404
        shape = lambda r: sorted(k for k in json.loads(r.text) if k not in {"detail", "instance"})  # noqa: E731
        assert shape(first) == shape(second)
        assert first.json().get("code") == second.json().get("code")
