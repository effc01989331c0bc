"""JWT authentication: verified tokens become a :class:`Caller`; guards check roles.

Rules (DESIGN.md §6):

- Algorithms come from configuration. The token's ``alg`` header only picks one of them, and only one
  that fits the key's type (an RSA key verifies RS*/PS*, an EC key ES*): ``none`` and HS256 signed with
  a public key are refused before any signature check.
- Keys come from a JWKS URL (fetched with httpx, cached; an unknown ``kid`` triggers at most one refresh
  per ``jwt_jwks_min_refresh_seconds``; a JWKS that cannot be fetched accepts nothing new: fail closed)
  or from one configured public key.
- Required claims: ``sub``, ``iss``, ``aud``, ``exp``, ``iat``, ``tenant``; issuer and audience match
  exactly; ``roles``/``groups`` are optional lists of strings.
- The ``tenant`` claim is validated (:mod:`wf_platform.tenancy`) here, before any SQL can run.
- Every failure is a 401 with one generic body; the reason goes to the log. A missing role is a 403.
- The ``admin`` role satisfies every role check within its tenant.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from wf_platform.devkeys import jwk_thumbprint
from wf_platform.logs import tenant_var
from wf_platform.problems import ForbiddenError, UnauthorizedError
from wf_platform.tenancy import TenantId, is_valid_tenant_id

__all__ = [
    "REQUIRED_CLAIMS",
    "Caller",
    "InvalidTokenError",
    "JwksKeySource",
    "JwtAuthMiddleware",
    "JwtVerifier",
    "KeySource",
    "StaticKeySource",
    "TenantGate",
    "caller_from_connection",
    "requires_any_role",
    "requires_role",
]

logger = logging.getLogger("wf_platform.auth")

REQUIRED_CLAIMS = ("sub", "iss", "aud", "exp", "iat", "tenant")

_KEY_FAMILIES: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the verified token's tenant, subject, roles and groups."""

    tenant: TenantId
    sub: str
    roles: frozenset[str] = field(default_factory=frozenset[str])
    groups: frozenset[str] = field(default_factory=frozenset[str])

    def has_role(self, role: str) -> bool:
        """Whether the caller holds ``role`` (``admin`` holds every role)."""
        return role in self.roles or "admin" in self.roles


class InvalidTokenError(Exception):
    """A token was refused; ``reason`` is for logs only, never for the client."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


VerificationKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class _Key:
    key: VerificationKey
    family: str
    alg: str | None  # the JWK's ``alg`` member, if it pins one


def _family_of(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    raise InvalidTokenError(f"unsupported key type {type(key).__name__}")


class KeySource(Protocol):
    """Where verification keys come from."""

    async def get_key(self, kid: str | None, /) -> _Key:
        """The key for ``kid`` (``None`` when the token names none); raise :class:`InvalidTokenError`."""
        ...


class StaticKeySource:
    """One configured public key (development, or a fixed deployment key)."""

    def __init__(self, pem: str | bytes, /) -> None:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("the public key must be RSA or EC")
        self._key = _Key(key=key, family=_family_of(key), alg=None)
        self.kid = jwk_thumbprint(key)

    @classmethod
    def from_file(cls, path: Path, /) -> StaticKeySource:
        """Load a PEM public key file."""
        return cls(path.read_bytes())

    async def get_key(self, kid: str | None, /) -> _Key:
        """The key; a token naming another ``kid`` is refused (it was signed for something else)."""
        if kid is not None and kid != self.kid:
            raise InvalidTokenError(f"unknown kid {kid!r}")
        return self._key


class JwksKeySource:
    """Keys from a JWKS URL, cached.

    - A known ``kid`` is served from the cache; the cache is refetched after ``max_age_seconds``.
    - An unknown ``kid`` refetches, but at most once per ``min_refresh_seconds`` (an attacker spraying
      random ``kid`` values cannot turn us into a load generator against the identity provider).
    - Concurrent refreshes are coalesced into one request.
    - When the JWKS cannot be fetched, unknown keys are refused (fail closed); known keys stay usable.
    """

    def __init__(
        self,
        url: str,
        /,
        *,
        client: httpx.AsyncClient | None = None,
        min_refresh_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._client = client
        self._owns_client = client is None
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._keys: dict[str | None, _Key] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetch_count = 0
        """How many times the JWKS was requested (for tests and metrics)."""

    async def aclose(self) -> None:
        """Close the HTTP client if this source created it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def get_key(self, kid: str | None, /) -> _Key:
        """The key for ``kid``, refreshing the JWKS when allowed."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._max_age
        if not stale and kid in self._keys:
            return self._keys[kid]
        await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise InvalidTokenError(f"unknown kid {kid!r}")
        return key

    async def _refresh(self) -> None:
        async with self._lock:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._min_refresh:
                # Someone refreshed a moment ago (maybe while we waited for the lock): use that.
                return
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except Exception as exc:
                logger.warning("JWKS fetch from %s failed: %s", self.url, exc)
                return
            self._keys = keys
            self._fetched_at = now

    async def _fetch(self) -> dict[str | None, _Key]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        self.fetch_count += 1
        response = await self._client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document: Any = response.json()
        raw_keys: Any = document.get("keys") if isinstance(document, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if not isinstance(raw_keys, list):
            raise ValueError("not a JWKS document")
        keys: dict[str | None, _Key] = {}
        entries: list[Any] = list(raw_keys)  # pyright: ignore[reportUnknownArgumentType]
        for raw in entries:
            if not isinstance(raw, dict):
                continue
            jwk_data: dict[str, Any] = dict(raw)  # pyright: ignore[reportUnknownArgumentType]
            if jwk_data.get("use", "sig") != "sig" or jwk_data.get("kty") not in {"RSA", "EC"}:
                continue
            try:
                parsed = jwt.PyJWK.from_dict(jwk_data)
            except jwt.PyJWTError as exc:
                logger.warning("skipping unusable JWK %s: %s", jwk_data.get("kid"), exc)
                continue
            key: Any = parsed.key
            if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                continue
            alg = jwk_data.get("alg")
            keys[jwk_data.get("kid")] = _Key(key=key, family=_family_of(key), alg=str(alg) if alg else None)
        return keys


class JwtVerifier:
    """Verifies bearer tokens and returns the :class:`Caller`.

    A token that verified is remembered (up to ``cache_size`` tokens, by its exact text) with its
    time claims and the key that verified it: the next request with the same token skips the
    signature check (an RSA verification plus PyJWT's parsing, most of a request's auth cost) but
    still has its ``exp``/``nbf`` checked against the clock, and must still name a key the key
    source holds (a key rotated out of the JWKS stops its tokens). Failures are never cached.
    """

    def __init__(
        self,
        keys: KeySource,
        /,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway_seconds: int = 30,
        cache_size: int = 10_000,
    ) -> None:
        unknown = [a for a in algorithms if a not in _KEY_FAMILIES]
        if unknown or not algorithms:
            raise ValueError(f"unsupported JWT algorithms {unknown or 'none'}; use asymmetric ones")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = tuple(algorithms)
        self.leeway = leeway_seconds
        self.cache_size = cache_size
        self._verified: dict[str, _Verified] = {}

    async def verify(self, token: str, /) -> Caller:
        """Verify ``token`` or raise :class:`InvalidTokenError`."""
        known = self._verified.get(token)
        if known is not None:
            now = time.time()
            if (
                known.not_before - self.leeway <= now < known.expires + self.leeway
                and await self.keys.get_key(known.kid) is known.key
            ):
                return known.caller
            del self._verified[token]
        caller, claims, kid, key = await self._verify(token)
        if len(self._verified) >= self.cache_size:
            # Insertion order: the oldest tenth goes (tokens expire; a flood of fresh tokens only
            # costs each its own verification).
            for stale in list(self._verified)[: max(1, self.cache_size // 10)]:
                del self._verified[stale]
        self._verified[token] = _Verified(
            caller=caller,
            expires=float(claims["exp"]),
            not_before=float(claims.get("nbf", claims["iat"])),
            kid=kid,
            key=key,
        )
        return caller

    async def _verify(self, token: str, /) -> tuple[Caller, dict[str, Any], str | None, _Key]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidTokenError(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidTokenError("kid is not a string")
        key = await self.keys.get_key(kid)
        if _KEY_FAMILIES[alg] != key.family or (key.alg is not None and key.alg != alg):
            raise InvalidTokenError(f"algorithm {alg} does not fit key {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    "enforce_minimum_key_length": True,
                },
            )
            # RFC 7519 NumericDate is a JSON number; PyJWT would coerce "123" or true with int().
            for name in ("exp", "iat", "nbf"):
                value = claims.get(name)
                if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                    raise InvalidTokenError(f"{name} is not a number")
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"{type(exc).__name__}: {exc}") from None
        return _caller_from_claims(claims), claims, kid, key


@dataclass(frozen=True, slots=True)
class _Verified:
    caller: Caller
    expires: float
    not_before: float
    kid: str | None
    key: _Key


def _string_list(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):  # pyright: ignore[reportUnknownVariableType]
        raise InvalidTokenError(f"claim {name!r} must be a list of strings")
    return frozenset(value)  # pyright: ignore[reportUnknownArgumentType]


def _caller_from_claims(claims: Mapping[str, Any]) -> Caller:
    tenant = claims.get("tenant")
    if not is_valid_tenant_id(tenant):
        raise InvalidTokenError(f"invalid tenant claim {tenant!r}")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise InvalidTokenError("invalid sub claim")
    assert isinstance(tenant, str)
    return Caller(
        tenant=TenantId(tenant),
        sub=sub,
        roles=_string_list(claims, "roles"),
        groups=_string_list(claims, "groups"),
    )


class JwtAuthMiddleware:
    """ASGI middleware: requests under the protected prefixes need a valid bearer token.

    On success ``scope["user"]`` is the :class:`Caller`. On failure it answers 401 through the app's
    exception handlers (a generic problem body). Other paths (health, metrics, schema) pass untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Callable[[], JwtVerifier],
        protected_prefixes: Sequence[str] = ("/v1",),
    ) -> None:
        self.app = app
        self._verifier = verifier
        self._prefixes = tuple(protected_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"} and scope["path"].startswith(self._prefixes):
            caller = await self._authenticate(scope)
            scope["user"] = caller
            tenant_var.set(caller.tenant)
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Caller:
        token: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
                break
        if token is None:
            raise UnauthorizedError("missing or invalid credentials")
        try:
            return await self._verifier().verify(token)
        except InvalidTokenError as exc:
            logger.info("token refused: %s", exc.reason)
            raise UnauthorizedError("missing or invalid credentials") from None


def caller_from_connection(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The authenticated caller of a request (401 if the route was not behind the middleware)."""
    user: Any = connection.scope.get("user")  # pyright: ignore[reportUnknownMemberType]
    if not isinstance(user, Caller):
        raise UnauthorizedError("missing or invalid credentials")
    return user


class TenantGate(Protocol):
    """Checks, after the role check, that the caller's tenant may act (exists, migrated, not suspended)."""

    async def ensure_active(self, tenant: TenantId, /) -> None:
        """Raise :class:`~wf_platform.problems.ForbiddenError` when the tenant may not act."""
        ...


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

TENANT_GATE_STATE_KEY = "wf_tenant_gate"


def requires_role(*roles: str) -> Guard:
    """A guard: the caller must hold every one of ``roles`` (403), and its tenant must be active (403).

    The role check needs no SQL and runs first, so a token without the role never provisions a tenant.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        caller = caller_from_connection(connection)
        missing = [r for r in roles if not caller.has_role(r)]
        if missing:
            raise ForbiddenError(f"requires role {', '.join(missing)}", code="missing_role")
        gate: TenantGate | None = connection.app.state.get(TENANT_GATE_STATE_KEY)
        if gate is not None:
            await gate.ensure_active(caller.tenant)

    guard.__name__ = f"requires_role({', '.join(roles)})"
    return guard


def requires_any_role(*roles: str) -> Guard:
    """A guard: the caller must hold at least one of ``roles`` (403), and its tenant must be active."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        caller = caller_from_connection(connection)
        if not any(caller.has_role(r) for r in roles):
            raise ForbiddenError(f"requires one of the roles {', '.join(roles)}", code="missing_role")
        gate: TenantGate | None = connection.app.state.get(TENANT_GATE_STATE_KEY)
        if gate is not None:
            await gate.ensure_active(caller.tenant)

    guard.__name__ = f"requires_any_role({', '.join(roles)})"
    return guard


def load_jwks_document(path: Path, /) -> dict[str, Any]:
    """Read a JWKS file (handy for serving the dev JWKS)."""
    document: dict[str, Any] = json.loads(path.read_text())
    return document
