"""Every route of the registry and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from wf_platform.testing import SigningKeys, bearer

Client = AsyncTestClient[Litestar]
MakeDef = Callable[..., dict[str, Any]]

YAML_DEFINITION = """\
name: invoice
version: 1.0.0
description: Approve an invoice
steps:
  check:
    type: machine
    step_type: invoices.check
  approve:
    type: human
    title: Approve the invoice
    candidate_groups: [finance]
edges:
  - source: check
    target: approve
"""


async def test_register_then_same_content_then_other_content(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    body = make_definition("order", "1.0.0")
    created = await client.post("/v1/definitions", json=body, headers=auth)
    assert created.status_code == 201, created.text
    record = created.json()
    assert created.headers["location"] == "/v1/definitions/order/versions/1.0.0"
    assert record["name"] == "order"
    assert record["version"] == "1.0.0"
    assert record["author"] == "user-1"
    assert record["digest"].startswith("sha256:")
    assert record["deprecated"] is False
    assert record["definition"]["steps"]["s0"] == {"type": "machine", "step_type": "payments.charge"}

    again = await client.post("/v1/definitions", json=body, headers=auth)
    assert again.status_code == 200
    assert again.json() == record

    # Key order and whitespace do not change the content: still the same version.
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=4)
    same = await client.post(
        "/v1/definitions", content=reordered, headers={**auth, "Content-Type": "application/json"}
    )
    assert same.status_code == 200

    conflict = await client.post(
        "/v1/definitions", json=make_definition("order", "1.0.0", steps=3), headers=auth
    )
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith("application/problem+json")
    assert conflict.json()["code"] == "version_conflict"

    stored = await client.get("/v1/definitions/order/versions/1.0.0", headers=auth)
    assert stored.json()["digest"] == record["digest"]


async def test_register_yaml_and_read_back(client: Client, auth: dict[str, str]) -> None:
    created = await client.post(
        "/v1/definitions", content=YAML_DEFINITION, headers={**auth, "Content-Type": "application/yaml"}
    )
    assert created.status_code == 201, created.text
    read = await client.get("/v1/definitions/invoice", headers=auth)
    assert read.status_code == 200
    assert read.json()["definition"]["steps"]["approve"]["type"] == "human"
    # Without a content type, YAML is recognised too (and is the same content: 200).
    again = await client.post("/v1/definitions", content=YAML_DEFINITION, headers=auth)
    assert again.status_code == 200


async def test_yaml_syntax_error_names_the_line(client: Client, auth: dict[str, str]) -> None:
    broken = "name: x\nversion: 1.0.0\nsteps: {a: [1, 2}\n"
    response = await client.post(
        "/v1/definitions", content=broken, headers={**auth, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_document"
    assert len(problem["errors"]) == 1
    assert "line 3" in problem["errors"][0]["message"]


async def test_json_syntax_error_names_the_line(client: Client, auth: dict[str, str]) -> None:
    response = await client.post(
        "/v1/definitions",
        content='{\n "name": "x",\n oops\n}',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "line 3" in response.json()["errors"][0]["message"]


async def test_invalid_definition_lists_every_error_and_stores_nothing(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    body = make_definition("broken", "1.0.0", steps=1)
    body["edges"] = [{"source": "s0", "target": f"missing_{i}"} for i in range(10)]
    response = await client.post("/v1/definitions", json=body, headers=auth)
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_definition"
    assert problem["status"] == 422
    assert len(problem["errors"]) == 10
    assert {e["path"] for e in problem["errors"]} == {f"edges[{i}].target" for i in range(10)}
    assert all("missing_" in e["message"] for e in problem["errors"])
    listed = await client.get("/v1/definitions", headers=auth)
    assert listed.json() == {"items": []}
    assert (await client.get("/v1/definitions/broken", headers=auth)).status_code == 404


@pytest.mark.parametrize("body", [[], "just text", 42])
async def test_non_object_documents_are_422(client: Client, auth: dict[str, str], body: Any) -> None:
    response = await client.post("/v1/definitions", json=body, headers=auth)
    assert response.status_code == 422


async def test_validate_only_stores_nothing(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    valid = await client.post("/v1/definitions/validate", json=make_definition("order"), headers=auth)
    assert valid.status_code == 200
    report = valid.json()
    assert report["valid"] is True
    assert report["name"] == "order"
    assert report["digest"].startswith("sha256:")
    invalid = make_definition("order")
    invalid["version"] = "one"
    refused = await client.post("/v1/definitions/validate", json=invalid, headers=auth)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "version"
    assert (await client.get("/v1/definitions", headers=auth)).json() == {"items": []}


async def test_latest_is_semver_order(client: Client, auth: dict[str, str], make_definition: MakeDef) -> None:
    for version in ["1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1", "1.10.0-beta"]:
        response = await client.post("/v1/definitions", json=make_definition("order", version), headers=auth)
        assert response.status_code == 201, response.text
    latest = await client.get("/v1/definitions/order", headers=auth)
    assert latest.json()["version"] == "2.0.0-rc.1"
    versions = await client.get("/v1/definitions/order/versions", headers=auth)
    assert [v["version"] for v in versions.json()["versions"]] == [
        "2.0.0-rc.1",
        "1.10.0",
        "1.10.0-beta",
        "1.9.0",
        "1.2.0",
    ]
    assert "definition" not in versions.json()["versions"][0]


async def test_list_shows_the_latest_of_each_name(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    for name, version in [("beta", "1.0.0"), ("alpha", "1.9.0"), ("alpha", "1.10.0")]:
        assert (
            await client.post("/v1/definitions", json=make_definition(name, version), headers=auth)
        ).status_code == 201
    listed = (await client.get("/v1/definitions", headers=auth)).json()["items"]
    assert [(i["name"], i["latest_version"], i["version_count"]) for i in listed] == [
        ("alpha", "1.10.0", 2),
        ("beta", "1.0.0", 1),
    ]


async def test_unknown_names_and_versions_are_404(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    await client.post("/v1/definitions", json=make_definition("order"), headers=auth)
    for path in [
        "/v1/definitions/nope",
        "/v1/definitions/nope/versions",
        "/v1/definitions/order/versions/9.9.9",
        "/v1/definitions/order/versions/9.9.9/graph",
    ]:
        response = await client.get(path, headers=auth)
        assert response.status_code == 404, path
        assert response.json()["code"] == "definition_not_found"
    deprecate = await client.post("/v1/definitions/order/versions/9.9.9/deprecate", headers=auth)
    assert deprecate.status_code == 404


async def test_graph_as_mermaid_and_json(
    client: Client, auth: dict[str, str], make_definition: MakeDef
) -> None:
    await client.post("/v1/definitions", json=make_definition("order", steps=3), headers=auth)
    mermaid = await client.get("/v1/definitions/order/versions/1.0.0/graph", headers=auth)
    assert mermaid.status_code == 200
    assert mermaid.json()["format"] == "mermaid"
    assert mermaid.json()["mermaid"].startswith("flowchart")
    as_json = await client.get("/v1/definitions/order/versions/1.0.0/graph?format=json", headers=auth)
    graph = as_json.json()["graph"]
    assert {n["id"] for n in graph["nodes"]} == {"s0", "s1", "s2"}
    assert len(graph["edges"]) == 2
    bad = await client.get("/v1/definitions/order/versions/1.0.0/graph?format=svg", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["code"] == "bad_request"


async def test_deprecation(client: Client, auth: dict[str, str], make_definition: MakeDef) -> None:
    for version in ["1.0.0", "1.1.0"]:
        await client.post("/v1/definitions", json=make_definition("order", version), headers=auth)
    deprecated = await client.post("/v1/definitions/order/versions/1.1.0/deprecate", headers=auth)
    assert deprecated.status_code == 200
    assert deprecated.json()["deprecated"] is True
    assert deprecated.json()["deprecated_by"] == "user-1"
    again = await client.post("/v1/definitions/order/versions/1.1.0/deprecate", headers=auth)
    assert again.json()["deprecated_at"] == deprecated.json()["deprecated_at"]
    # New instances start on the latest non-deprecated version; the deprecated one stays readable.
    assert (await client.get("/v1/definitions/order", headers=auth)).json()["version"] == "1.0.0"
    pinned = await client.get("/v1/definitions/order/versions/1.1.0", headers=auth)
    assert pinned.status_code == 200
    assert pinned.json()["deprecated"] is True
    await client.post("/v1/definitions/order/versions/1.0.0/deprecate", headers=auth)
    none_left = await client.get("/v1/definitions/order", headers=auth)
    assert none_left.status_code == 404
    assert none_left.json()["code"] == "no_active_version"
    listed = (await client.get("/v1/definitions", headers=auth)).json()["items"]
    assert listed[0]["latest_version"] == "1.1.0"
    assert listed[0]["deprecated"] is True
    # Registering the same content again is still idempotent, not a resurrection.
    assert (
        await client.post("/v1/definitions", json=make_definition("order", "1.1.0"), headers=auth)
    ).status_code == 200


async def test_roles(client: Client, keys: SigningKeys, tenant: str, make_definition: MakeDef) -> None:
    reader = bearer(keys.token(tenant=tenant, roles=["definitions:read"]))
    writer = bearer(keys.token(tenant=tenant, roles=["definitions:write"]))
    nobody = bearer(keys.token(tenant=tenant, roles=["instances:read"]))
    admin = bearer(keys.token(tenant=tenant, roles=["admin"]))
    assert (await client.post("/v1/definitions", json=make_definition(), headers=reader)).status_code == 403
    assert (
        await client.post("/v1/definitions/validate", json=make_definition(), headers=reader)
    ).status_code == 403
    assert (await client.post("/v1/definitions", json=make_definition(), headers=writer)).status_code == 201
    assert (await client.get("/v1/definitions", headers=writer)).status_code == 403
    assert (await client.get("/v1/definitions/order", headers=nobody)).status_code == 403
    denied = await client.post("/v1/definitions/order/versions/1.0.0/deprecate", headers=reader)
    assert denied.status_code == 403
    assert denied.json()["code"] == "missing_role"
    assert (await client.get("/v1/definitions/order", headers=reader)).status_code == 200
    assert (await client.get("/v1/definitions/order", headers=admin)).status_code == 200


async def test_limits(
    make_client: Callable[..., Client], auth: dict[str, str], make_definition: MakeDef
) -> None:
    async with make_client(max_body_bytes=20_000, max_definition_bytes=4_000, max_json_depth=8) as client:
        huge = await client.post(
            "/v1/definitions",
            content=b"{" + b" " * 30_000 + b"}",
            headers={**auth, "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        assert huge.json()["code"] == "payload_too_large"
        big = make_definition("order", steps=80)
        too_big = await client.post("/v1/definitions", json=big, headers=auth)
        assert too_big.status_code == 413
        assert too_big.json()["code"] == "document_too_large"
        deep: Any = "x"
        for _ in range(20):
            deep = {"a": deep}
        nested = make_definition("order")
        nested["metadata"] = deep
        too_deep = await client.post("/v1/definitions", json=nested, headers=auth)
        assert too_deep.status_code == 422
        assert too_deep.json()["code"] == "nesting_too_deep"
        wrong_type = await client.post(
            "/v1/definitions", content=b"<xml/>", headers={**auth, "Content-Type": "application/xml"}
        )
        assert wrong_type.status_code == 415


async def test_yaml_aliases_are_refused(client: Client, auth: dict[str, str]) -> None:
    bomb = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n"
    response = await client.post(
        "/v1/definitions", content=bomb, headers={**auth, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 422
    assert "aliases" in response.json()["errors"][0]["message"]


async def test_openapi_documents_the_routes(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/v1/definitions/{name}/versions/{version}" in schema["paths"]
    assert "/health/ready" in schema["paths"]


async def test_examples_register(client: Client, auth: dict[str, str]) -> None:
    import pathlib

    examples = pathlib.Path(__file__).parents[3] / "examples"
    files = (
        sorted(p for p in examples.glob("**/*") if p.suffix in {".yaml", ".yml", ".json"})
        if examples.exists()
        else []
    )
    if not files:
        pytest.skip("no example definitions yet")
    for path in files:
        document = yaml.safe_load(path.read_text())
        if not isinstance(document, dict) or "steps" not in document:
            continue
        response = await client.post("/v1/definitions", content=path.read_bytes(), headers=auth)
        assert response.status_code in {200, 201}, (path, response.text)
