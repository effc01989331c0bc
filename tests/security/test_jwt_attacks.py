"""Attacks on token verification (wf_platform.auth), beyond libs/wf_platform/tests/test_platform_auth.py.

Tokens are built by hand where PyJWT would refuse to build them (``alg: none``, HS256 keyed with the
public key, mistyped claims). JWKS tests run against a real HTTP server on 127.0.0.1 that counts its
requests; the attacker's key server (``jku``/``x5u``) is another one that must never be asked anything.

Decisions asserted here (DESIGN.md §6 leaves them to us):
- ``aud`` may be a list (RFC 7519 §4.1.3); the token is for us when one member equals our audience
  exactly. ``iss`` is one string, compared exactly (no prefix, suffix, case folding, whitespace).
- Time claims are JSON numbers (RFC 7519 NumericDate); a string or a boolean is refused.
- ``jku``, ``x5u``, ``x5c`` and an embedded ``jwk`` are ignored: keys come only from configuration.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from wf_platform.auth import InvalidTokenError, JwksKeySource, JwtVerifier, StaticKeySource
from wf_platform.testing import SigningKeys, serve
from wf_stack import free_port

ISS, AUD, LEEWAY = "wf-dev", "wf", 30


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(
    header: dict[str, Any],
    claims: dict[str, Any],
    *,
    key: SigningKeys | None = None,
    hmac_key: bytes | None = None,
) -> str:
    """A JWS built by hand: RS256 with ``key``, HMAC-SHA256 with ``hmac_key``, or unsigned."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}".encode()
    if key is not None:
        private: Any = key.private_key
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif hmac_key is not None:
        mac = hmac.HMAC(hmac_key, hashes.SHA256())
        mac.update(signing_input)
        signature = mac.finalize()
    else:
        signature = b""
    return f"{signing_input.decode()}.{b64(signature)}"


@pytest.fixture(scope="module")
def rsa_keys() -> SigningKeys:
    return SigningKeys.generate()


@pytest.fixture(scope="module")
def verifier(rsa_keys: SigningKeys) -> JwtVerifier:
    # the services' defaults: RS256/ES256, 30 s leeway
    return JwtVerifier(StaticKeySource(rsa_keys.public_pem), issuer=ISS, audience=AUD, leeway_seconds=LEEWAY)


async def refused(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)


# --------------------------------------------------------------------------- algorithm confusion


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["empty", "garbage"])
async def test_alg_none_in_every_spelling(
    rsa_keys: SigningKeys, verifier: JwtVerifier, alg: str, signature: str
) -> None:
    claims = rsa_keys.claims(tenant="acme", roles=["admin"])
    token = raw_token({"alg": alg, "typ": "JWT", "kid": rsa_keys.kid}, claims)
    if signature == "garbage":
        token += "c2lnbmF0dXJl"
    await refused(verifier, token)
    await refused(verifier, raw_token({"alg": alg, "typ": "JWT"}, claims))  # no kid either


def _public_forms(keys: SigningKeys) -> dict[str, bytes]:
    public = keys.private_key.public_key()
    return {
        "pem": keys.public_pem.encode(),
        "pem-stripped": keys.public_pem.strip().encode(),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "pkcs1-pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "jwk-json": json.dumps(keys.jwk()).encode(),
        "jwk-json-sorted": json.dumps(keys.jwk(), sort_keys=True, separators=(",", ":")).encode(),
        "jwk-n": keys.jwk()["n"].encode(),
    }


@pytest.mark.parametrize(
    "form", ["pem", "pem-stripped", "der", "pkcs1-pem", "jwk-json", "jwk-json-sorted", "jwk-n"]
)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256"])
async def test_hmac_keyed_with_the_public_key_is_refused(
    rsa_keys: SigningKeys, verifier: JwtVerifier, form: str, alg: str
) -> None:
    claims = rsa_keys.claims(tenant="acme", roles=["admin"])
    secret = _public_forms(rsa_keys)[form]
    await refused(
        verifier, raw_token({"alg": alg, "typ": "JWT", "kid": rsa_keys.kid}, claims, hmac_key=secret)
    )
    # an HMAC signature under an allowed alg name is just a bad signature
    await refused(
        verifier, raw_token({"alg": "RS256", "typ": "JWT", "kid": rsa_keys.kid}, claims, hmac_key=secret)
    )


async def test_alg_header_mistyped_is_refused(rsa_keys: SigningKeys, verifier: JwtVerifier) -> None:
    claims = rsa_keys.claims(tenant="acme")
    for alg in [None, 256, ["RS256"], {"alg": "RS256"}, "", "rs256", "RS256 ", "PS256", "EdDSA"]:
        await refused(verifier, raw_token({"alg": alg, "kid": rsa_keys.kid}, claims, key=rsa_keys))


# --------------------------------------------------------------------------- claims

REQUIRED = ("sub", "iss", "aud", "exp", "iat", "tenant")
MISTYPES: dict[str, Any] = {"number": 12345, "list": ["x"], "null": None, "empty": ""}


@pytest.mark.parametrize(
    ("claim", "mistype"),
    [  # a number is the right type for a time claim (see the time tests)
        (c, m)
        for c in REQUIRED
        for m in ("missing", *MISTYPES)
        if not (c in {"exp", "iat"} and m == "number")
    ],
)
async def test_every_required_claim_missing_or_mistyped_is_refused(
    rsa_keys: SigningKeys, verifier: JwtVerifier, claim: str, mistype: str
) -> None:
    claims = rsa_keys.claims(tenant="acme")
    if mistype == "missing":
        del claims[claim]
    else:
        claims[claim] = MISTYPES[mistype]
    await refused(
        verifier, raw_token({"alg": "RS256", "typ": "JWT", "kid": rsa_keys.kid}, claims, key=rsa_keys)
    )


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "numeric-string"),
        ("iat", "numeric-string"),
        ("nbf", "numeric-string"),
        ("iat", True),
        ("nbf", True),
    ],
)
async def test_time_claims_must_be_json_numbers(
    rsa_keys: SigningKeys, verifier: JwtVerifier, claim: str, value: Any
) -> None:
    claims = rsa_keys.claims(tenant="acme")
    claims[claim] = str(claims[claim]) if value == "numeric-string" else value
    await refused(verifier, raw_token({"alg": "RS256", "kid": rsa_keys.kid}, claims, key=rsa_keys))


@pytest.mark.parametrize(
    ("claim", "offset", "accepted"),
    [
        ("exp", -(LEEWAY + 5), False),  # expired beyond the leeway
        ("exp", -(LEEWAY - 5), True),  # expired, within the leeway
        ("nbf", LEEWAY + 5, False),
        ("nbf", LEEWAY - 5, True),
        ("iat", LEEWAY + 5, False),  # issued in the future beyond the leeway
        ("iat", LEEWAY - 5, True),
    ],
)
async def test_time_claims_at_the_leeway_edges(
    rsa_keys: SigningKeys, verifier: JwtVerifier, claim: str, offset: int, accepted: bool
) -> None:
    now = int(time.time())
    claims = rsa_keys.claims(tenant="acme")
    claims[claim] = now + offset
    if claim == "exp":
        claims["iat"] = claims["nbf"] = now - 3600
    token = raw_token({"alg": "RS256", "kid": rsa_keys.kid}, claims, key=rsa_keys)
    if accepted:
        assert (await verifier.verify(token)).tenant == "acme"
    else:
        await refused(verifier, token)


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        (AUD, True),
        ([AUD], True),
        (["other", AUD], True),  # RFC 7519: the token is for every listed audience
        (["other"], False),
        ([], False),
        ("wf ", False),
        (" wf", False),
        ("WF", False),
        ("w", False),
        ("wfx", False),
        ("xwf", False),
        ("wf,other", False),
        ([["wf"]], False),
        ({"aud": "wf"}, False),
    ],
)
async def test_audience_matches_exactly(
    rsa_keys: SigningKeys, verifier: JwtVerifier, aud: Any, accepted: bool
) -> None:
    claims = {**rsa_keys.claims(tenant="acme"), "aud": aud}
    token = raw_token({"alg": "RS256", "kid": rsa_keys.kid}, claims, key=rsa_keys)
    if accepted:
        assert (await verifier.verify(token)).tenant == "acme"
    else:
        await refused(verifier, token)


@pytest.mark.parametrize(
    "iss",
    [
        "wf-de",
        "f-dev",
        "wf-dev-x",
        "xwf-dev",
        "WF-DEV",
        "Wf-dev",
        "wf-dev ",
        " wf-dev",
        "wf-dev\n",
        "wf-dev\x00",
        ["wf-dev"],
        ["wf-dev", "other"],
        {"iss": "wf-dev"},
        "ｗｆ-dev",
    ],
)
async def test_issuer_matches_exactly(rsa_keys: SigningKeys, verifier: JwtVerifier, iss: Any) -> None:
    claims = {**rsa_keys.claims(tenant="acme"), "iss": iss}
    await refused(verifier, raw_token({"alg": "RS256", "kid": rsa_keys.kid}, claims, key=rsa_keys))


# --------------------------------------------------------------------------- JWKS sources


class KeyServer:
    """A JWKS endpoint on 127.0.0.1 that records every request (path and query)."""

    def __init__(self, *keys: SigningKeys) -> None:
        self.keys = list(keys)
        self.extra: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.down = False
        self.garbage = False
        self.delay = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.requests.append(
            scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            status, body = 503, b"down"
        elif self.garbage:
            status, body = 200, b"<html>not a jwks</html>"
        else:
            status, body = 200, json.dumps({"keys": [k.jwk() for k in self.keys] + self.extra}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @property
    def fetches(self) -> int:
        return len(self.requests)


async def _served(server: KeyServer) -> AsyncIterator[str]:
    async with serve(server, free_port(), lifespan="off") as url:
        yield url


@pytest.fixture
async def idp() -> AsyncIterator[tuple[KeyServer, str]]:
    server = KeyServer()
    async for url in _served(server):
        yield server, f"{url}/.well-known/jwks.json"


@pytest.fixture
async def attacker() -> AsyncIterator[tuple[KeyServer, str]]:
    server = KeyServer()
    async for url in _served(server):
        yield server, url


def jwks_verifier(
    url: str, *, min_refresh: float = 30.0, max_age: float = 3600.0
) -> tuple[JwtVerifier, JwksKeySource]:
    source = JwksKeySource(url, min_refresh_seconds=min_refresh, max_age_seconds=max_age, timeout_seconds=2.0)
    return JwtVerifier(source, issuer=ISS, audience=AUD, leeway_seconds=LEEWAY), source


HOSTILE_KIDS = [
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "/dev/random",
    "' OR '1'='1' --",
    "x'; DROP TABLE keys; --",
    "kid\r\nX-Injected: yes",
    "kid\nHost: evil.example",
    "http://127.0.0.1:1/evil",
    "{{7*7}}${jndi:ldap://127.0.0.1:1/a}",
    "\u0000",
    "ｋｉｄ",
    "k" * 20_000,
]


async def test_hostile_kids_are_refused_and_never_shape_a_request(
    idp: tuple[KeyServer, str], rsa_keys: SigningKeys
) -> None:
    server, url = idp
    server.keys = [rsa_keys]
    verifier, source = jwks_verifier(url)
    static = JwtVerifier(StaticKeySource(rsa_keys.public_pem), issuer=ISS, audience=AUD)
    try:
        for kid in HOSTILE_KIDS:
            token = rsa_keys.sign(rsa_keys.claims(tenant="acme"), headers={"kid": kid})
            await refused(verifier, token)
            await refused(static, token)
        for kid in [1, ["a"], {"a": 1}, True]:
            await refused(
                verifier,
                raw_token({"alg": "RS256", "kid": kid}, rsa_keys.claims(tenant="acme"), key=rsa_keys),
            )
    finally:
        await source.aclose()
    assert set(server.requests) == {"/.well-known/jwks.json"}  # the kid never becomes part of a URL
    assert server.fetches == 1  # the first unknown kid fetched; the rest were inside the refresh interval


async def test_a_flood_of_random_kids_is_bounded_and_a_known_kid_stays_fast(
    idp: tuple[KeyServer, str], rsa_keys: SigningKeys
) -> None:
    server, url = idp
    server.keys = [rsa_keys]
    verifier, source = jwks_verifier(url, min_refresh=30.0)
    good = rsa_keys.token(tenant="acme")
    try:
        await verifier.verify(good)  # warm the cache
        server.delay = 0.3  # a slow identity provider makes any refresh visible in latencies
        started = time.monotonic()
        latencies: list[float] = []

        async def normal_requests() -> None:
            for _ in range(20):
                t0 = time.monotonic()
                assert (await verifier.verify(good)).tenant == "acme"
                latencies.append(time.monotonic() - t0)
                await asyncio.sleep(0.02)

        async def one_random() -> None:
            token = rsa_keys.sign(rsa_keys.claims(tenant="acme"), headers={"kid": uuid.uuid4().hex})
            with pytest.raises(InvalidTokenError):
                await verifier.verify(token)

        flood = [one_random() for _ in range(300)]
        await asyncio.wait_for(asyncio.gather(normal_requests(), *flood), timeout=20)
        elapsed = time.monotonic() - started
    finally:
        await source.aclose()
    assert server.fetches <= 2 + int(elapsed // 30), server.fetches  # warm-up + one refresh per interval
    assert max(latencies) < 0.25, latencies  # the known kid never waited for the identity provider


async def test_jku_x5u_x5c_and_embedded_jwk_are_never_fetched_or_trusted(
    idp: tuple[KeyServer, str], attacker: tuple[KeyServer, str], rsa_keys: SigningKeys
) -> None:
    server, url = idp
    server.keys = [rsa_keys]
    evil_server, evil_url = attacker
    evil = SigningKeys.generate()
    evil_server.keys = [evil]
    cert = _self_signed(evil)
    claims = evil.claims(tenant="acme", roles=["admin"])
    headers: list[dict[str, Any]] = [
        {"jku": f"{evil_url}/jwks.json", "kid": evil.kid},
        {"jku": f"{evil_url}/jwks.json", "kid": rsa_keys.kid},
        {"x5u": f"{evil_url}/cert.pem", "kid": evil.kid},
        {"x5u": f"{evil_url}/cert.pem"},
        {"jwk": evil.jwk(), "kid": evil.kid},
        {"jwk": evil.jwk()},
        {"x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]},
        {
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
            "kid": rsa_keys.kid,
        },
    ]
    verifier, source = jwks_verifier(url)
    static = JwtVerifier(StaticKeySource(rsa_keys.public_pem), issuer=ISS, audience=AUD)
    try:
        for extra in headers:
            header = {"alg": "RS256", "typ": "JWT", **extra}
            token = raw_token(header, claims, key=evil)
            await refused(verifier, token)
            await refused(static, token)
        # A genuine token that also names an attacker's key URL: still no request to it.
        genuine = raw_token(
            {"alg": "RS256", "kid": rsa_keys.kid, "jku": f"{evil_url}/jwks.json", "x5u": f"{evil_url}/c"},
            rsa_keys.claims(tenant="acme"),
            key=rsa_keys,
        )
        await verifier.verify(genuine)
    finally:
        await source.aclose()
    assert evil_server.requests == []
    assert set(server.requests) <= {"/.well-known/jwks.json"}


def _self_signed(keys: SigningKeys) -> x509.Certificate:
    private: Any = keys.private_key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wf-dev")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )


async def test_symmetric_and_encryption_keys_in_the_jwks_are_never_used(
    idp: tuple[KeyServer, str], rsa_keys: SigningKeys
) -> None:
    server, url = idp
    secret = b"shared-secret-" + uuid.uuid4().bytes
    server.keys = [rsa_keys]
    server.extra = [
        {"kty": "oct", "kid": "hmac", "k": b64(secret), "alg": "HS256"},
        {**SigningKeys.generate().jwk(), "kid": "enc", "use": "enc"},
    ]
    verifier, source = jwks_verifier(url)
    try:
        claims = rsa_keys.claims(tenant="acme")
        await refused(verifier, raw_token({"alg": "HS256", "kid": "hmac"}, claims, hmac_key=secret))
        await refused(verifier, raw_token({"alg": "RS256", "kid": "hmac"}, claims, hmac_key=secret))
        assert (await verifier.verify(rsa_keys.token(tenant="acme"))).tenant == "acme"
    finally:
        await source.aclose()


async def test_rotation_new_kid_accepted_after_refresh_and_removed_key_refused(
    idp: tuple[KeyServer, str],
) -> None:
    server, url = idp
    old, new = SigningKeys.generate(), SigningKeys.generate("EC")
    server.keys = [old]
    verifier, source = jwks_verifier(url, min_refresh=0.3, max_age=3600)
    try:
        assert (await verifier.verify(old.token(tenant="acme"))).tenant == "acme"
        server.keys = [new]  # the identity provider rotates: new key in, old key out
        await asyncio.sleep(0.35)
        assert (await verifier.verify(new.token(tenant="acme"))).tenant == "acme"  # unknown kid -> refresh
        await refused(verifier, old.token(tenant="acme"))  # the refresh dropped the old key
        assert server.fetches == 2
    finally:
        await source.aclose()


async def test_removed_key_is_refused_after_max_age_even_without_a_new_kid(
    idp: tuple[KeyServer, str],
) -> None:
    server, url = idp
    old, kept = SigningKeys.generate(), SigningKeys.generate()
    server.keys = [old, kept]
    verifier, source = jwks_verifier(url, min_refresh=0.2, max_age=0.5)
    try:
        assert (await verifier.verify(old.token(tenant="acme"))).tenant == "acme"
        server.keys = [kept]  # revoked
        await asyncio.sleep(0.6)
        await refused(verifier, old.token(tenant="acme"))
        assert (await verifier.verify(kept.token(tenant="acme"))).tenant == "acme"
    finally:
        await source.aclose()


@pytest.mark.parametrize("failure", ["down", "garbage"])
async def test_jwks_outage_fails_closed_for_new_kids_and_keeps_cached_keys(
    idp: tuple[KeyServer, str], failure: str
) -> None:
    server, url = idp
    cached, unknown = SigningKeys.generate(), SigningKeys.generate()
    server.keys = [cached]
    verifier, source = jwks_verifier(url, min_refresh=0.2, max_age=0.3)
    try:
        assert (await verifier.verify(cached.token(tenant="acme"))).tenant == "acme"
        setattr(server, failure, True)
        server.keys = [cached, unknown]  # would be served, if the server answered
        await asyncio.sleep(0.35)  # the cache is past max_age: every request wants a refresh
        started = time.monotonic()
        for _ in range(40):
            assert (await verifier.verify(cached.token(tenant="acme"))).tenant == "acme"
            await refused(verifier, unknown.token(tenant="acme"))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
        assert server.fetches <= 2 + int(elapsed / 0.2) + 1, (server.fetches, elapsed)
        setattr(server, failure, False)
        await asyncio.sleep(0.25)
        assert (await verifier.verify(unknown.token(tenant="acme"))).tenant == "acme"  # recovered
    finally:
        await source.aclose()
