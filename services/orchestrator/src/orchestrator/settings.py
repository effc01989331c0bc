"""The orchestrator's settings: ``ORCHESTRATOR_*`` variables (see docs/conventions.md), read once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from wf_platform.settings import ServiceSettings

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "ORCHESTRATOR"


@dataclass(frozen=True, kw_only=True)
class Settings(ServiceSettings):
    """Platform settings plus the orchestrator's own."""

    service_name: str = "orchestrator"
    port: int = 8002
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/wf_orchestrator"
    registry_url: str = "http://127.0.0.1:8001"
    """Where definitions are read (``GET /v1/definitions/{name}[/versions/{version}]``)."""
    registry_timeout_seconds: float = 5.0
    registry_cache_seconds: float = 2.0
    """How long a start reuses the registry's answer for the same definition (0: ask every time); a
    version published or deprecated meanwhile is seen by starts after at most this long."""
    max_input_bytes: int = 262_144
    """Largest start input (JSON) accepted; larger is 413."""
    max_context_bytes: int = 1_048_576
    """Largest instance context a step's output may grow it to; beyond, the result fails the step."""
    consumer_batch: int = 256
    """Messages fetched per pull from WF_RESULTS and WF_TASKS."""
    consumer_ack_wait_seconds: float = 30.0
    consumer_concurrency: int = 8
    """Messages of a fetched batch applied at once (keep below db_pool_size)."""
    consumer_pipeline: int = 2
    """Fetched batches handled at once: the next is applied while the previous waits on its commit."""
    timer_poll_seconds: float = 0.2
    """How often due timers are looked for (retries, deadlines, timer steps, task due dates)."""
    default_job_timeout_seconds: float = 300.0
    """Deadline of a machine step attempt whose step sets none: a lost job is re-dispatched after it."""
    outbox_relay: bool = True
    """Publish committed outbox rows from this process (off only in fault tests: commits, no publishes)."""
    run_background: bool = True
    """Run the consumers and the timer loop (tests may drive them by hand)."""

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``ORCHESTRATOR_*`` and ``OTEL_*``."""
        return cls.from_env(ENV_PREFIX, env=os.environ if env is None else env, service_name="orchestrator")
