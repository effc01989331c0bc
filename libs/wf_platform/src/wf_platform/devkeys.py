"""Development signing keys and tokens.

``make dev`` and ``wf token`` share :func:`ensure_dev_keys`: it creates an RS256 key pair once under a
git-ignored directory (``.dev/`` by default) as ``jwt-private.pem`` (mode 0600) and ``jwt-public.pem``,
plus ``jwks.json`` for anything that prefers a JWKS. The key id is the RFC 7638 thumbprint of the public
key, so it is stable for the key and needs no bookkeeping. These keys are for one machine's dev stack
only; production verifies against the identity provider's JWKS.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "DevKeyPair",
    "ensure_dev_keys",
    "jwk_thumbprint",
    "mint_token",
    "public_jwk",
]

DEV_ISSUER = "wf-dev"
DEV_AUDIENCE = "wf"
PRIVATE_KEY_NAME = "jwt-private.pem"
PUBLIC_KEY_NAME = "jwt-public.pem"
JWKS_NAME = "jwks.json"

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_fixed(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK members that RFC 7638 hashes (no ``kid``/``alg``/``use``)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    numbers_ec = key.public_numbers()
    curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    size = (key.curve.key_size + 7) // 8
    return {
        "crv": curve,
        "kty": "EC",
        "x": _b64url_fixed(numbers_ec.x, size),
        "y": _b64url_fixed(numbers_ec.y, size),
    }


def jwk_thumbprint(key: PublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public key, base64url without padding."""
    canonical = json.dumps(public_jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, kw_only=True)
class DevKeyPair:
    """A development key pair on disk."""

    private_key_file: Path
    public_key_file: Path
    jwks_file: Path
    kid: str
    """RFC 7638 thumbprint of the public key."""

    def private_key(self) -> PrivateKey:
        """Load the private key."""
        key = serialization.load_pem_private_key(self.private_key_file.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        return key

    def public_key_pem(self) -> str:
        """The public key as PEM text."""
        return self.public_key_file.read_text()


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def ensure_dev_keys(key_dir: Path | str = ".dev") -> DevKeyPair:
    """Create the development RS256 key pair under ``key_dir`` unless it exists; return it.

    Safe to call from several processes at once: the first to create the private key file (``O_EXCL``)
    generates the pair, the others wait for its public key.
    """
    directory = Path(key_dir)
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_NAME
    public_path = directory / PUBLIC_KEY_NAME
    jwks_path = directory / JWKS_NAME
    lock_path = directory / ".keygen.lock"
    if not private_path.exists():
        try:
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            _wait_for(private_path, public_path)
        else:
            try:
                os.close(fd)
                if not private_path.exists():
                    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    pem = key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                    _write_atomic(private_path, pem, mode=0o600)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()
    private_key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    public_key = private_key.public_key()
    kid = jwk_thumbprint(public_key)
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        _write_atomic(public_path, public_pem, mode=0o644)
    alg = "RS256" if isinstance(public_key, rsa.RSAPublicKey) else "ES256"
    jwks = json.dumps({"keys": [{**public_jwk(public_key), "kid": kid, "alg": alg, "use": "sig"}]}, indent=2)
    if not jwks_path.exists() or jwks_path.read_text() != jwks:
        _write_atomic(jwks_path, jwks.encode(), mode=0o644)
    return DevKeyPair(
        private_key_file=private_path, public_key_file=public_path, jwks_file=jwks_path, kid=kid
    )


def _wait_for(*paths: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"another process did not finish creating {paths[0]}")
        time.sleep(0.05)


def mint_token(
    private_key: PrivateKey,
    /,
    *,
    tenant: str,
    sub: str,
    roles: Sequence[str] = (),
    groups: Sequence[str] = (),
    ttl_seconds: int = 3600,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    kid: str | None = None,
    now: int | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a token with the claims the services require (RS256 for RSA keys, ES256 for P-256)."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "tenant": tenant,
        "roles": list(roles),
        "groups": list(groups),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if extra_claims:
        claims.update(extra_claims)
    algorithm = "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else "ES256"
    key_id = kid or jwk_thumbprint(private_key.public_key())
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": key_id})
