"""``wf worker run module:steps``: run machine steps as a worker (settings from ``WF_WORKER_*``)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from wf_cli.output import EXIT_UNAVAILABLE, EXIT_USAGE, fail

__all__ = ["worker"]

worker = typer.Typer(help="Run machine steps as a worker.", no_args_is_help=True)


@worker.command("run")
def run(
    target: Annotated[
        str, typer.Argument(help="module:attribute holding the steps (e.g. examples.worker:steps).")
    ],
    nats_url: Annotated[str | None, typer.Option(help="NATS URLs [WF_WORKER_NATS_URL].")] = None,
    tenant: Annotated[
        str | None, typer.Option(help="One tenant, or * for every tenant [WF_WORKER_TENANT].")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs at once [WF_WORKER_CONCURRENCY].")
    ] = None,
    ack_wait: Annotated[
        float | None, typer.Option(min=1, help="Ack wait in seconds [WF_WORKER_ACK_WAIT_SECONDS].")
    ] = None,
    health_host: Annotated[str | None, typer.Option(help="[WF_WORKER_HEALTH_HOST].")] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve /health/live here [WF_WORKER_HEALTH_PORT].")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="[WF_WORKER_LOG_LEVEL].")] = None,
) -> None:
    """Run the steps of TARGET until SIGTERM or SIGINT (then finish running jobs and exit 0)."""
    from wf_platform.logs import configure_logging
    from wf_platform.settings import TelemetrySettings
    from wf_platform.telemetry import install_tracer_provider
    from wf_worker import ConsumerBindError, Worker, WorkerSettings, load_steps

    try:
        settings = WorkerSettings.from_env(
            nats_url=nats_url,
            concurrency=concurrency,
            ack_wait_seconds=ack_wait,
            health_host=health_host,
            health_port=health_port,
            log_level=log_level,
        )
        if tenant is not None:
            settings = dataclasses.replace(settings, tenant=None if tenant == "*" else tenant)
        steps = load_steps(target, search_path=Path.cwd())
        instance = Worker(steps, settings=settings)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    configure_logging(service="wf-worker", level=settings.log_level)
    install_tracer_provider(TelemetrySettings.from_env("wf-worker"))
    try:
        asyncio.run(instance.run())
    except ConsumerBindError as exc:
        fail(str(exc))
    except (OSError, TimeoutError) as exc:
        fail(f"cannot connect to NATS at {settings.nats_url}: {exc}", code=EXIT_UNAVAILABLE)
