"""schemathesis against each service's OpenAPI document: no request a schema allows (or nearly allows)
makes a service answer 5xx.

Cases are generated with a fixed seed and a bounded count per operation (``EXAMPLES``), then sent
in-process to the running stack (the apps live on the test loop, so generation and sending are two
steps: Hypothesis draws synchronously, the requests are awaited). Every request carries a valid token
of one fresh tenant with every role, so the handlers, not the auth layer, get the inputs. A case with
path parameters is sent twice: as generated, and with the ids of a definition, an instance and a task
of that tenant, so that the handlers behind the 404 get the generated queries and bodies too. The
registry reads its documents raw, so its routes get the wire format's JSON Schema as their body.

5xx found this way and fixed (each pinned in test_bad_input): U+0000 in any body, path or query
(Postgres cannot store it), inbox filters out of the database's integer and date range.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings

from wf_platform.testing import unique_tenant
from workflow_core.wire import wire_json_schema

from .conftest import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = 20  # per operation (a case with ids is sent twice): the module takes ~40 s on 2 busy cores
SEED = 20_240_601


def _cases(operation: Any) -> list[Any]:
    drawn: list[Any] = []

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def draw(case: Any) -> None:
        drawn.append(case)

    draw()
    return drawn


def _request(case: Any) -> tuple[str, str, dict[str, Any], dict[str, str], bytes | None]:
    path = case.formatted_path
    query = {k: v for k, v in (case.query or {}).items() if v is not None}
    headers = {str(k): str(v) for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    content: bytes | None = None
    body = getattr(case, "body", None)
    if body is not None and type(body).__name__ != "NotSet":
        media = getattr(case, "media_type", None) or "application/json"
        if isinstance(body, bytes):
            content = body
        elif isinstance(body, str) and "json" not in media:
            content = body.encode()
        else:
            content = json.dumps(body).encode()
        headers["Content-Type"] = media
    return case.method.upper(), path, query, headers, content


def _with_registry_bodies(document: dict[str, Any]) -> dict[str, Any]:
    """The registry reads its documents raw (JSON or YAML), so its OpenAPI document declares no request
    body for them: give those routes the wire format's JSON Schema, so that generated definitions reach
    the parser and the validator instead of an empty body."""
    wire = json.loads(json.dumps(wire_json_schema()).replace("#/$defs/", "#/components/schemas/Wire"))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update({f"Wire{name}": schema for name, schema in wire["$defs"].items()})
    body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": wire["$ref"]}}},
    }
    for path in ("/v1/definitions", "/v1/definitions/validate"):
        operation = document["paths"].get(path, {}).get("post")
        if operation is not None and "requestBody" not in operation:
            operation["requestBody"] = body
    return document


def _url(case: Any, known: dict[str, str]) -> str | None:
    """The case's path with the path parameters it shares with ``known`` set to those (None if none):
    a generated id is almost always unknown, and the handler behind the 404 never runs."""
    parameters = {**(case.path_parameters or {})}
    if not parameters.keys() & known.keys():
        return None
    path: str = case.operation.path
    for name, value in parameters.items():
        path = path.replace(f"{{{name}}}", quote(known.get(name, str(value)), safe=""))
    return path


@pytest.mark.parametrize("service", ["registry", "orchestrator", "inbox"])
async def test_no_generated_request_gets_a_5xx(stack: Stack, service: str) -> None:
    client = stack.clients[service]
    document = (await client.get("/schema/openapi.json")).json()
    tenant = unique_tenant("fuzz")
    # something to find: a definition, an instance, a task of this tenant
    await stack.register(
        tenant,
        {
            "name": "fuzz",
            "version": "1.0.0",
            "steps": {"a": {"type": "machine", "step_type": "fuzz.a"}},
            "edges": [],
        },
    )
    instance_id = (await stack.start(tenant, "fuzz", {}))["id"]
    task_id = await stack.seed_task(tenant)
    known = {"name": "fuzz", "version": "1.0.0", "instance_id": instance_id, "task_id": task_id}
    if service == "registry":
        document = _with_registry_bodies(document)
    schema = schemathesis.openapi.from_dict(document)
    auth = stack.headers(tenant)
    failures: list[str] = []
    sent = 0
    for path, methods in document["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method in methods:
            operation = schema[path][method.upper()]
            for case in _cases(operation):
                verb, url, query, headers, content = _request(case)
                for target in (url, _url(case, known)):
                    if target is None:
                        continue
                    response = await client.request(
                        verb, target, params=query, headers={**headers, **auth}, content=content
                    )
                    sent += 1
                    if response.status_code >= 500:
                        failures.append(
                            f"{verb} {target} {query} {(content or b'')[:200]!r} -> {response.status_code}"
                        )
    assert sent > 0
    assert not failures, "\n".join(failures[:20])
