"""Development keys: created once, reused, thumbprint per RFC 7638, tokens the verifier accepts."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from wf_platform.auth import JwtVerifier, StaticKeySource
from wf_platform.devkeys import ensure_dev_keys, jwk_thumbprint, mint_token


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 section 3.1.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL"
        "5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    e = "AQAB"

    def _int(value: str) -> int:
        import base64

        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")

    key = rsa.RSAPublicNumbers(_int(e), _int(n)).public_key()
    assert jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_keys_are_created_once_and_reused(tmp_path: Path) -> None:
    first = ensure_dev_keys(tmp_path / ".dev")
    second = ensure_dev_keys(tmp_path / ".dev")
    assert first == second
    assert stat.S_IMODE(first.private_key_file.stat().st_mode) == 0o600
    assert first.public_key_file.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert first.kid in first.jwks_file.read_text()


async def test_minted_token_verifies_against_the_public_key(tmp_path: Path) -> None:
    keys = ensure_dev_keys(tmp_path)
    token = mint_token(
        keys.private_key(), tenant="acme", sub="user-1", roles=["definitions:read"], kid=keys.kid
    )
    verifier = JwtVerifier(StaticKeySource.from_file(keys.public_key_file), issuer="wf-dev", audience="wf")
    caller = await verifier.verify(token)
    assert caller.tenant == "acme"
    assert caller.has_role("definitions:read")
    assert not caller.has_role("definitions:write")
