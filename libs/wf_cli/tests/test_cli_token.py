"""``wf token`` prints only a token that the services accept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from wf_cli.main import app
from wf_platform.auth import JwtVerifier, StaticKeySource
from wf_platform.devkeys import ensure_dev_keys


async def test_token_is_the_only_output_and_verifies(tmp_path: Path) -> None:
    key_dir = tmp_path / ".dev"
    result = CliRunner().invoke(
        app,
        [
            "token",
            "--tenant", "acme",
            "--sub", "user-1",
            "--roles", "definitions:write,definitions:read",
            "--groups", "finance,ops",
            "--ttl", "600",
            "--key-dir", str(key_dir),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert token.count(".") == 2
    keys = ensure_dev_keys(key_dir)  # created by the command, reused here
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": keys.kid, "typ": "JWT"}
    verifier = JwtVerifier(StaticKeySource.from_file(keys.public_key_file), issuer="wf-dev", audience="wf")
    caller = await verifier.verify(token)
    assert caller.tenant == "acme"
    assert caller.sub == "user-1"
    assert caller.roles == {"definitions:write", "definitions:read"}
    assert caller.groups == {"finance", "ops"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600


def test_the_key_pair_is_reused(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        assert (
            runner.invoke(
                app, ["token", "--tenant", "acme", "--sub", "u", "--key-dir", str(tmp_path)]
            ).exit_code
            == 0
        )
    assert len(list(tmp_path.glob("*.pem"))) == 2


@pytest.mark.parametrize("tenant", ["Acme", "pg_catalog", 'a"; drop', "public"])
def test_invalid_tenant_is_refused(tmp_path: Path, tenant: str) -> None:
    result = CliRunner().invoke(app, ["token", "--tenant", tenant, "--sub", "u", "--key-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert result.stdout.count(".") < 2


def test_console_script_runs(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "wf_cli",
            "token",
            "--tenant",
            "acme",
            "--sub",
            "u",
            "--key-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert completed.stdout.count(".") == 2
    assert completed.stdout.strip() == completed.stdout[:-1]
