"""The inbox's settings: ``TASK_INBOX_*`` variables (see docs/conventions.md), read once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wf_platform.settings import ServiceSettings

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "TASK_INBOX"


@dataclass(frozen=True, kw_only=True)
class Settings(ServiceSettings):
    """Platform settings plus the inbox's own."""

    service_name: str = "task-inbox"
    port: int = 8003
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/wf_inbox"
    orchestrator_url: str = "http://127.0.0.1:8002"
    """Where the task page fetches the instance's graph (with the caller's own token)."""
    dev_login: bool = False
    """Enable the development sign-in page that mints tokens (never in production)."""
    dev_private_key_file: Path | None = None
    """PEM private key the dev sign-in signs with (``.dev/jwt-private.pem`` under ``make dev``)."""
    dev_private_key_pem: str | None = None
    """The same key given inline (tests); the file wins when both are set."""
    dev_token_ttl_seconds: int = 8 * 3600
    """Lifetime of a token minted by the dev sign-in."""
    csrf_secret: str | None = None
    """HMAC secret of the CSRF tokens of the web inbox. Set it when several replicas serve the inbox
    (a token issued by one must verify on another); unset, each process draws a random one."""
    cookie_secure: bool = False
    """Mark the session and CSRF cookies ``Secure`` (behind HTTPS)."""
    consumer_durable: str = "task-inbox"
    """Durable name of the task consumer on ``WF_TASKS``."""
    consumer_tenant: str = "*"
    """Consume the task messages of one tenant, or ``*`` for every tenant."""
    consumer_batch: int = 64
    """Messages fetched per pull."""
    consumer_ack_wait_seconds: float = 30.0
    """Redelivery after this long without an ack."""
    page_size_max: int = 200
    """Largest ``limit`` of ``GET /v1/tasks``."""

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``TASK_INBOX_*`` and ``OTEL_*``."""
        return cls.from_env(ENV_PREFIX, env=os.environ if env is None else env, service_name="task-inbox")
