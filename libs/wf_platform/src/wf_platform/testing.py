"""Test helpers shipped with the platform: signing keys, tokens, unique tenants.

keys = SigningKeys.generate()
settings = Settings(database_url=fresh_database, nats_url=nats_url, jwt_public_key_pem=keys.public_pem)
token = keys.token(tenant=unique_tenant(), roles=["definitions:read"])
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wf_platform.devkeys import DEV_AUDIENCE, DEV_ISSUER, PrivateKey, jwk_thumbprint, public_jwk

__all__ = [
    "SigningKeys",
    "asgi_client",
    "bearer",
    "in_app_loop",
    "in_own_task",
    "serve",
    "stream_subject_counts",
    "unique_tenant",
]


def unique_tenant(prefix: str = "t") -> str:
    """A fresh, valid tenant id (``<prefix>_<12 hex>``)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def bearer(token: str, /) -> dict[str, str]:
    """The ``Authorization`` header for a token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class SigningKeys:
    """A key pair that signs test tokens (RS256 for RSA, ES256 for P-256)."""

    private_key: PrivateKey
    kid: str

    @classmethod
    def generate(cls, kind: Literal["RSA", "EC"] = "RSA") -> SigningKeys:
        """A new key pair; the kid is its RFC 7638 thumbprint."""
        key: PrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return cls(private_key=key, kid=jwk_thumbprint(key.public_key()))

    @property
    def algorithm(self) -> str:
        """The JWS algorithm these keys sign with."""
        return "RS256" if isinstance(self.private_key, rsa.RSAPrivateKey) else "ES256"

    @property
    def public_pem(self) -> str:
        """The public key as PEM."""
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self) -> dict[str, str]:
        """The public JWK with ``kid``, ``alg`` and ``use``."""
        return {
            **public_jwk(self.private_key.public_key()),
            "kid": self.kid,
            "alg": self.algorithm,
            "use": "sig",
        }

    def claims(
        self,
        *,
        tenant: str,
        sub: str = "user-1",
        roles: Sequence[str] = (),
        groups: Sequence[str] = (),
        ttl: int = 300,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
    ) -> dict[str, Any]:
        """A valid claim set."""
        now = int(time.time())
        return {
            "iss": issuer,
            "aud": audience,
            "sub": sub,
            "tenant": tenant,
            "roles": list(roles),
            "groups": list(groups),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }

    def sign(self, claims: dict[str, Any], /, *, headers: dict[str, Any] | None = None) -> str:
        """Sign arbitrary claims (for tests of refused tokens)."""
        return jwt.encode(
            claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid, **(headers or {})}
        )

    def token(
        self,
        *,
        tenant: str,
        sub: str = "user-1",
        roles: Sequence[str] = (),
        groups: Sequence[str] = (),
        ttl: int = 300,
        **overrides: Any,
    ) -> str:
        """A valid token; ``overrides`` replace (or, with value ``None``, remove) claims."""
        claims = self.claims(tenant=tenant, sub=sub, roles=roles, groups=groups, ttl=ttl)
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.sign(claims)


async def stream_subject_counts(js: Any, stream: str, subject_filter: str, /) -> dict[str, int]:
    """How many messages ``stream`` holds per subject matching ``subject_filter`` (a nats-py JetStream)."""
    info: Any = await js.stream_info(stream, subjects_filter=subject_filter)
    subjects: dict[str, int] = dict(info.state.subjects or {})
    return subjects


_T = TypeVar("_T")


def in_app_loop(client: Any, fn: Callable[..., Awaitable[_T]], /, *args: Any) -> _T:
    """Run ``fn(*args)`` on the event loop of an app under ``AsyncTestClient``.

    Litestar's test client runs the app (and so its engine, NATS connection and relay) in a portal
    thread with its own loop; the app's async objects must be used there, not on the test's loop.
    """
    result: _T = client.blocking_portal.call(fn, *args)
    return result


@asynccontextmanager
async def asgi_client(app: Any, /) -> AsyncGenerator[httpx.AsyncClient]:
    """An httpx client that calls ``app`` on the current event loop, with the app's lifespan run.

    Unlike Litestar's ``AsyncTestClient`` (which hands each request to a portal thread, one at a
    time), requests made with ``asyncio.gather`` here really run concurrently, and the app's engine,
    NATS connection and relay live on the test's loop.
    """
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
            yield client


@asynccontextmanager
async def serve(
    app: Any, port: int, /, *, lifespan: Literal["on", "off", "auto"] = "on"
) -> AsyncGenerator[str]:
    """Serve an ASGI ``app`` with uvicorn on 127.0.0.1:``port`` in this event loop; yields the base URL.

    Take the port from :func:`wf_stack.free_port`: it stays held until a server binds it, and
    uvicorn binds it like any server does (``SO_REUSEADDR``)."""
    import asyncio

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan=lifespan)
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(800):  # bounded: 20 s
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def in_own_task(manager: AbstractAsyncContextManager[_T], /) -> AsyncGenerator[_T]:
    """Enter and exit ``manager`` in one dedicated task.

    anyio cancel scopes (an ASGI client's lifespan) must be exited in the task that entered them,
    and pytest-asyncio sets a fixture up and tears it down in different tasks.
    """
    import asyncio

    entered: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold() -> None:
        try:
            async with manager as value:
                entered.set_result(value)
                await release.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            raise

    task = asyncio.get_running_loop().create_task(hold())
    try:
        yield await entered
    finally:
        release.set()
        await task
