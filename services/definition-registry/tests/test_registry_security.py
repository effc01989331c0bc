"""Tokens, roles and tenant isolation at the registry's edge."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from definition_registry import Settings, create_app
from wf_platform.testing import SigningKeys, asgi_client, bearer, unique_tenant

Client = AsyncTestClient[Litestar]
MakeDef = Callable[..., dict[str, Any]]
ROLES = ["definitions:read", "definitions:write"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _refused_tokens(keys: SigningKeys, tenant: str) -> dict[str, str]:
    now = int(time.time())

    def signed(**changes: Any) -> str:
        claims = keys.claims(tenant=tenant, roles=ROLES)
        for name, value in changes.items():
            if value is None:
                claims.pop(name)
            else:
                claims[name] = value
        return keys.sign(claims)

    claims = keys.claims(tenant=tenant, roles=ROLES)
    body = _b64(json.dumps(claims).encode())
    none_head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": keys.kid}).encode())
    hs_head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": keys.kid}).encode())
    hs_sig = hmac.new(keys.public_pem.encode(), f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
    return {
        "expired": signed(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": signed(nbf=now + 3600, iat=now),
        "issued in the future": signed(iat=now + 3600, nbf=now),
        "wrong issuer": signed(iss="https://evil.example"),
        "wrong audience": signed(aud="another-service"),
        "alg none": f"{none_head}.{body}.",
        "HS256 with the RSA public key": f"{hs_head}.{body}.{_b64(hs_sig)}",
        "unknown kid": keys.sign(claims, headers={"kid": "not-our-key"}),
        "other key": SigningKeys.generate().sign(claims, headers={"kid": keys.kid}),
        "missing tenant": signed(tenant=None),
        "missing sub": signed(sub=None),
        "missing exp": signed(exp=None),
        "malformed": "eyJhbGciOiJSUzI1NiJ9.not-base64!.sig",
        "garbage": "hello",
    }


async def test_bad_tokens_are_401_with_one_generic_body(
    client: Client, keys: SigningKeys, tenant: str
) -> None:
    bodies = set()
    for reason, token in _refused_tokens(keys, tenant).items():
        for path in ["/v1/definitions", "/v1/definitions/order/versions/1.0.0"]:
            response = await client.get(path, headers=bearer(token))
            assert response.status_code == 401, reason
            bodies.add(response.text)
    missing = await client.get("/v1/definitions")
    assert missing.status_code == 401
    bodies.add(missing.text)
    assert len(bodies) == 1  # nothing tells an attacker which check failed


async def test_hostile_tenant_claims_are_refused_before_any_sql(
    client: Client, keys: SigningKeys, settings: Settings, make_definition: MakeDef
) -> None:
    for hostile in [
        'a"; drop schema x;--',
        "public",
        "pg_catalog",
        "information_schema",
        "t_x; select 1",
        "A" * 40,
        "",
    ]:
        token = keys.sign(keys.claims(tenant=hostile, roles=ROLES))
        response = await client.post("/v1/definitions", json=make_definition(), headers=bearer(token))
        assert response.status_code in {401, 403}, hostile
    conn = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))
    try:
        assert await conn.fetchval("SELECT count(*) FROM wf.tenants") == 0
        assert await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'") == []
    finally:
        await conn.close()


async def test_wrong_role_is_403_and_provisions_nothing(
    client: Client, keys: SigningKeys, settings: Settings
) -> None:
    tenant = unique_tenant()
    response = await client.get(
        "/v1/definitions", headers=bearer(keys.token(tenant=tenant, roles=["tasks:work"]))
    )
    assert response.status_code == 403
    conn = await asyncpg.connect(settings.database_url.replace("+asyncpg", ""))
    try:
        assert await conn.fetchval("SELECT count(*) FROM wf.tenants WHERE tenant_id = $1", tenant) == 0
    finally:
        await conn.close()


async def test_tenant_b_can_neither_list_read_nor_guess_tenant_a(
    client: Client, keys: SigningKeys, make_definition: MakeDef
) -> None:
    a = bearer(keys.token(tenant=unique_tenant("a"), roles=ROLES))
    b = bearer(keys.token(tenant=unique_tenant("b"), roles=ROLES))
    assert (
        await client.post("/v1/definitions", json=make_definition("secret", "1.0.0"), headers=a)
    ).status_code == 201
    assert (await client.get("/v1/definitions", headers=b)).json() == {"items": []}
    for path in [
        "/v1/definitions/secret",
        "/v1/definitions/secret/versions",
        "/v1/definitions/secret/versions/1.0.0",
        "/v1/definitions/secret/versions/1.0.0/graph",
    ]:
        response = await client.get(path, headers=b)
        assert response.status_code == 404, path  # never 403: existence is not revealed
    assert (
        await client.post("/v1/definitions/secret/versions/1.0.0/deprecate", headers=b)
    ).status_code == 404
    # The same name in tenant B is another definition: other content is not a conflict.
    other = make_definition("secret", "1.0.0", steps=4)
    assert (await client.post("/v1/definitions", json=other, headers=b)).status_code == 201
    a_version = (await client.get("/v1/definitions/secret/versions/1.0.0", headers=a)).json()
    b_version = (await client.get("/v1/definitions/secret/versions/1.0.0", headers=b)).json()
    assert a_version["digest"] != b_version["digest"]
    assert len(a_version["definition"]["steps"]) == 2
    assert (await client.get("/v1/definitions/secret/versions/1.0.0", headers=a)).json()[
        "deprecated"
    ] is False


async def test_interleaved_tenants_over_a_small_pool_never_mix(
    keys: SigningKeys, make_definition: MakeDef, settings: Settings
) -> None:
    assert settings.db_pool_size == 4
    async with asgi_client(create_app(settings)) as client:
        await _interleave(client, keys, make_definition)


async def _interleave(client: Any, keys: SigningKeys, make_definition: MakeDef) -> None:
    tenants = {unique_tenant("a"): "alpha", unique_tenant("b"): "beta"}
    headers = {t: bearer(keys.token(tenant=t, roles=ROLES)) for t in tenants}
    for tenant, prefix in tenants.items():
        for i in range(3):
            body = make_definition(f"{prefix}_{i}", "1.0.0")
            assert (
                await client.post("/v1/definitions", json=body, headers=headers[tenant])
            ).status_code == 201
    order = [t for _ in range(1000) for t in tenants]  # 2,000 requests, strictly alternating

    async def one(tenant: str, i: int) -> None:
        prefix = tenants[tenant]
        if i % 2:
            response = await client.get("/v1/definitions", headers=headers[tenant])
            names = {item["name"] for item in response.json()["items"]}
            assert names == {f"{prefix}_0", f"{prefix}_1", f"{prefix}_2"}, (tenant, names)
        else:
            name = f"{prefix}_{i % 3}"
            response = await client.get(f"/v1/definitions/{name}", headers=headers[tenant])
            assert response.status_code == 200, response.text
            assert response.json()["name"] == name
            if i % 10 == 0:
                other = "beta" if prefix == "alpha" else "alpha"
                leak = await client.get(f"/v1/definitions/{other}_{i % 3}", headers=headers[tenant])
                assert leak.status_code == 404

    batch = 40
    for start in range(0, len(order), batch):
        await asyncio.gather(*(one(t, start + j) for j, t in enumerate(order[start : start + batch])))
