"""JWT verification: every way a token can be wrong is a refusal; keys from a PEM or a JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest

from wf_platform.auth import Caller, InvalidTokenError, JwksKeySource, JwtVerifier, StaticKeySource
from wf_platform.testing import SigningKeys

ISS, AUD = "wf-dev", "wf"


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture(scope="module")
def verifier(keys: SigningKeys) -> JwtVerifier:
    return JwtVerifier(StaticKeySource(keys.public_pem), issuer=ISS, audience=AUD, leeway_seconds=5)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


async def test_valid_token_gives_the_caller(keys: SigningKeys, verifier: JwtVerifier) -> None:
    token = keys.token(tenant="acme", sub="user-1", roles=["definitions:read"], groups=["finance"])
    caller = await verifier.verify(token)
    assert caller == Caller(
        tenant="acme",  # type: ignore[arg-type]
        sub="user-1",
        roles=frozenset({"definitions:read"}),
        groups=frozenset({"finance"}),
    )


async def test_es256_is_accepted_with_an_ec_key() -> None:
    ec_keys = SigningKeys.generate("EC")
    verifier = JwtVerifier(StaticKeySource(ec_keys.public_pem), issuer=ISS, audience=AUD)
    caller = await verifier.verify(ec_keys.token(tenant="acme"))
    assert caller.tenant == "acme"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": int(time.time()) - 60}, id="expired"),
        pytest.param({"nbf": int(time.time()) + 600}, id="not-yet-valid-nbf"),
        pytest.param({"iat": int(time.time()) + 600}, id="not-yet-valid-iat"),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"iss": "wf-dev-evil"}, id="issuer-prefix"),
        pytest.param({"aud": "other"}, id="wrong-audience"),
        pytest.param({"aud": "wfx"}, id="audience-prefix"),
        pytest.param({"tenant": None}, id="missing-tenant"),
        pytest.param({"sub": None}, id="missing-sub"),
        pytest.param({"exp": None}, id="missing-exp"),
        pytest.param({"iat": None}, id="missing-iat"),
        pytest.param({"iss": None}, id="missing-iss"),
        pytest.param({"aud": None}, id="missing-aud"),
        pytest.param({"tenant": 'a"; drop schema x;--'}, id="tenant-injection"),
        pytest.param({"tenant": "public"}, id="tenant-public"),
        pytest.param({"tenant": "pg_catalog"}, id="tenant-pg-catalog"),
        pytest.param({"tenant": "information_schema"}, id="tenant-information-schema"),
        pytest.param({"tenant": "Acme"}, id="tenant-uppercase"),
        pytest.param({"tenant": "ab"}, id="tenant-too-short"),
        pytest.param({"tenant": ["acme"]}, id="tenant-not-a-string"),
        pytest.param({"roles": "admin"}, id="roles-not-a-list"),
    ],
)
async def test_bad_claims_are_refused(
    keys: SigningKeys, verifier: JwtVerifier, overrides: dict[str, Any]
) -> None:
    claims = keys.claims(tenant="acme")
    for name, value in overrides.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    with pytest.raises(InvalidTokenError):
        await verifier.verify(keys.sign(claims))


async def test_leeway_accepts_a_token_that_just_expired(keys: SigningKeys, verifier: JwtVerifier) -> None:
    caller = await verifier.verify(keys.token(tenant="acme", exp=int(time.time()) - 2))
    assert caller.sub == "user-1"


async def test_alg_none_is_refused(keys: SigningKeys, verifier: JwtVerifier) -> None:
    token = _unsigned({"alg": "none", "typ": "JWT", "kid": keys.kid}, keys.claims(tenant="acme"))
    with pytest.raises(InvalidTokenError, match="not accepted"):
        await verifier.verify(token)


async def test_hs256_signed_with_the_public_key_is_refused(keys: SigningKeys, verifier: JwtVerifier) -> None:
    header = {"alg": "HS256", "typ": "JWT", "kid": keys.kid}
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(keys.claims(tenant="acme")).encode())
    signature = hmac.new(keys.public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidTokenError, match="not accepted"):
        await verifier.verify(f"{head}.{body}.{_b64(signature)}")


async def test_hs256_is_refused_even_if_configured() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        JwtVerifier(
            StaticKeySource(SigningKeys.generate("EC").public_pem),
            issuer=ISS,
            audience=AUD,
            algorithms=["HS256"],
        )


async def test_es256_header_on_an_rsa_key_is_refused(keys: SigningKeys, verifier: JwtVerifier) -> None:
    ec_keys = SigningKeys.generate("EC")
    token = ec_keys.sign(keys.claims(tenant="acme"), headers={"kid": keys.kid})
    with pytest.raises(InvalidTokenError, match="does not fit"):
        await verifier.verify(token)


async def test_signature_by_another_key_is_refused(keys: SigningKeys, verifier: JwtVerifier) -> None:
    other = SigningKeys.generate()
    token = other.sign(keys.claims(tenant="acme"), headers={"kid": keys.kid})
    with pytest.raises(InvalidTokenError, match="Signature"):
        await verifier.verify(token)


async def test_unknown_kid_is_refused_with_a_static_key(keys: SigningKeys, verifier: JwtVerifier) -> None:
    token = keys.sign(keys.claims(tenant="acme"), headers={"kid": "someone-elses-key"})
    with pytest.raises(InvalidTokenError, match="unknown kid"):
        await verifier.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "x" * 5000, "....."])
async def test_malformed_tokens_are_refused(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


class _Jwks:
    """A JWKS endpoint for httpx.MockTransport that counts requests and can fail."""

    def __init__(self, *keys: SigningKeys) -> None:
        self.keys = list(keys)
        self.requests = 0
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            return httpx.Response(503)
        return httpx.Response(200, json={"keys": [k.jwk() for k in self.keys]})


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _jwks_verifier(jwks: _Jwks, clock: _Clock) -> tuple[JwtVerifier, JwksKeySource]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(jwks.handler))
    source = JwksKeySource(
        "https://idp.example/jwks", client=client, min_refresh_seconds=30, max_age_seconds=3600, clock=clock
    )
    return JwtVerifier(source, issuer=ISS, audience=AUD), source


async def test_jwks_keys_are_fetched_once_and_cached() -> None:
    keys = SigningKeys.generate()
    jwks, clock = _Jwks(keys), _Clock()
    verifier, _ = _jwks_verifier(jwks, clock)
    for _ in range(5):
        assert (await verifier.verify(keys.token(tenant="acme"))).tenant == "acme"
    assert jwks.requests == 1


async def test_jwks_unknown_kid_refreshes_at_most_once_per_interval() -> None:
    keys, rotated = SigningKeys.generate(), SigningKeys.generate("EC")
    jwks, clock = _Jwks(keys), _Clock()
    verifier, _ = _jwks_verifier(jwks, clock)
    await verifier.verify(keys.token(tenant="acme"))
    # A flood of unknown kids costs one extra fetch per interval, not one per token.
    for _ in range(10):
        with pytest.raises(InvalidTokenError, match="unknown kid"):
            await verifier.verify(rotated.token(tenant="acme"))
    assert jwks.requests == 1  # the first fetch was just now: no refresh yet
    clock.now += 31
    jwks.keys.append(rotated)  # the identity provider rotates in a new key
    assert (await verifier.verify(rotated.token(tenant="acme"))).tenant == "acme"
    assert jwks.requests == 2
    for _ in range(10):
        with pytest.raises(InvalidTokenError):
            await verifier.verify(SigningKeys.generate().token(tenant="acme"))
    assert jwks.requests == 2


async def test_jwks_unreachable_fails_closed() -> None:
    keys = SigningKeys.generate()
    jwks, clock = _Jwks(keys), _Clock()
    jwks.down = True
    verifier, _ = _jwks_verifier(jwks, clock)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(keys.token(tenant="acme"))
    clock.now += 31
    jwks.down = False
    assert (await verifier.verify(keys.token(tenant="acme"))).tenant == "acme"


async def test_jwks_keys_stay_usable_while_the_idp_is_down_after_max_age() -> None:
    keys = SigningKeys.generate()
    jwks, clock = _Jwks(keys), _Clock()
    verifier, _ = _jwks_verifier(jwks, clock)
    await verifier.verify(keys.token(tenant="acme"))
    jwks.down = True
    clock.now += 4000
    assert (await verifier.verify(keys.token(tenant="acme"))).tenant == "acme"
    assert jwks.requests == 2


async def test_jwks_alg_member_pins_the_algorithm() -> None:
    keys = SigningKeys.generate()
    jwks, clock = _Jwks(), _Clock()
    jwk = {**keys.jwk(), "alg": "RS512"}
    jwks.keys = []
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"keys": [jwk]}))
    )
    verifier = JwtVerifier(
        JwksKeySource("https://idp/jwks", client=client, clock=clock), issuer=ISS, audience=AUD
    )
    with pytest.raises(InvalidTokenError, match="does not fit"):
        await verifier.verify(keys.token(tenant="acme"))


async def test_a_verified_token_is_not_verified_again(
    keys: SigningKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jwt

    verifier = JwtVerifier(StaticKeySource(keys.public_pem), issuer=ISS, audience=AUD)
    decodes: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decodes.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    token = keys.token(tenant="acme", roles=["definitions:read"])
    callers = [await verifier.verify(token) for _ in range(3)]
    assert callers[0] == callers[1] == callers[2] and callers[0].tenant == "acme"
    assert decodes == [token]
    other = keys.token(tenant="acme", sub="user-2")
    assert (await verifier.verify(other)).sub == "user-2"
    assert decodes == [token, other]


async def test_a_remembered_token_still_expires(keys: SigningKeys) -> None:
    import asyncio

    verifier = JwtVerifier(StaticKeySource(keys.public_pem), issuer=ISS, audience=AUD, leeway_seconds=0)
    # A fractional exp a full second ahead: `ttl=1` on whole seconds could already be past when
    # the clock stood near the end of a second (this flaked once in CI).
    expires_at = time.time() + 1.0
    token = keys.token(tenant="acme", exp=expires_at)
    assert (await verifier.verify(token)).tenant == "acme"
    await asyncio.sleep(expires_at - time.time() + 0.2)
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


async def test_a_remembered_token_stops_working_when_its_key_leaves_the_jwks() -> None:
    keys = SigningKeys.generate()
    jwks, clock = _Jwks(keys), _Clock()
    verifier, _ = _jwks_verifier(jwks, clock)
    token = keys.token(tenant="acme")
    assert (await verifier.verify(token)).tenant == "acme"
    jwks.keys = [SigningKeys.generate()]  # the identity provider rotated the key out
    clock.now += 4000  # past the JWKS max age: the next lookup refreshes
    with pytest.raises(InvalidTokenError, match="unknown kid"):
        await verifier.verify(token)
