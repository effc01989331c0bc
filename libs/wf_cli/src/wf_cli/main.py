"""The ``wf`` command line.

``wf definitions|instances|tasks ...`` talk to the services through the client SDK
(:mod:`wf_cli.commands`; exit codes in :mod:`wf_cli.output`); ``wf worker run module:steps`` runs a
worker (:mod:`wf_cli.worker_command`).

``wf token`` mints a development token signed with the dev key pair (created under ``.dev/`` when
missing, by the same function ``make dev`` uses): issuer ``wf-dev``, audience ``wf``, RS256, ``kid`` =
RFC 7638 thumbprint. It prints the token and nothing else, so ``TOKEN=$(uv run wf token ...)`` works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wf_cli.commands import Connection, definitions, instances, tasks
from wf_cli.worker_command import worker

__all__ = ["app"]

app = typer.Typer(
    name="wf",
    help="Workflow suite command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@app.callback()
def _root(
    ctx: typer.Context,
    registry_url: Annotated[
        str | None,
        typer.Option(envvar="WF_REGISTRY_URL", help="definition-registry (http://127.0.0.1:8001)."),
    ] = None,
    orchestrator_url: Annotated[
        str | None, typer.Option(envvar="WF_ORCHESTRATOR_URL", help="orchestrator (http://127.0.0.1:8002).")
    ] = None,
    inbox_url: Annotated[
        str | None, typer.Option(envvar="WF_INBOX_URL", help="task-inbox (http://127.0.0.1:8003).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="WF_TOKEN", help="Bearer token (e.g. $(wf token ...)).", show_default=False),
    ] = None,
) -> None:
    """Workflow suite command line."""
    ctx.obj = Connection(registry_url, orchestrator_url, inbox_url, token)


app.add_typer(definitions, name="definitions")
app.add_typer(instances, name="instances")
app.add_typer(tasks, name="tasks")
app.add_typer(worker, name="worker")


@app.command()
def token(
    tenant: Annotated[str, typer.Option(help="Tenant id (^[a-z][a-z0-9_]{2,31}$).")],
    sub: Annotated[str, typer.Option(help="Subject (user id).")],
    roles: Annotated[
        str, typer.Option(help="Comma-separated roles, e.g. definitions:read,definitions:write.")
    ] = "",
    groups: Annotated[str, typer.Option(help="Comma-separated groups.")] = "",
    ttl: Annotated[int, typer.Option(min=1, max=30 * 24 * 3600, help="Lifetime in seconds.")] = 3600,
    key_dir: Annotated[Path, typer.Option(help="Directory of the dev key pair (created if missing).")] = Path(
        ".dev"
    ),
    issuer: Annotated[str, typer.Option(help="iss claim.")] = "wf-dev",
    audience: Annotated[str, typer.Option(help="aud claim.")] = "wf",
) -> None:
    """Print a development token for the dev stack (and nothing else)."""
    # Imported here: the service plumbing is heavy and the other commands do not need it.
    from wf_platform.devkeys import ensure_dev_keys, mint_token
    from wf_platform.tenancy import is_valid_tenant_id

    if not is_valid_tenant_id(tenant):
        raise typer.BadParameter(
            "must match ^[a-z][a-z0-9_]{2,31}$ and not be reserved", param_hint="--tenant"
        )
    keys = ensure_dev_keys(key_dir)
    signed = mint_token(
        keys.private_key(),
        tenant=tenant,
        sub=sub,
        roles=_split(roles),
        groups=_split(groups),
        ttl_seconds=ttl,
        issuer=issuer,
        audience=audience,
        kid=keys.kid,
    )
    typer.echo(signed)


if __name__ == "__main__":
    app()
