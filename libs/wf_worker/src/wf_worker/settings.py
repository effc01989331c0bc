"""Worker settings: ``WF_WORKER_*`` variables (docs/conventions.md, "Workers"), read once at the edge.

A library user builds :class:`WorkerSettings` directly or passes plain keyword arguments to
:class:`~wf_worker.Worker`; ``wf worker run`` reads the environment with
:meth:`WorkerSettings.from_env` and lets its flags override.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "WorkerSettings"]

ENV_PREFIX = "WF_WORKER_"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Where the worker connects and how it pulls jobs."""

    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs."""
    nats_creds_file: Path | None = None
    """A NATS ``.creds`` file (JWT + NKey seed)."""
    nats_token: str | None = None
    """A NATS token."""
    nats_user: str | None = None
    """NATS user (with ``nats_password``)."""
    nats_password: str | None = None
    """NATS password."""
    nats_tls_ca_file: Path | None = None
    """CA bundle that verifies the server (turns TLS on)."""
    nats_tls_cert_file: Path | None = None
    """Client certificate (mutual TLS, with ``nats_tls_key_file``)."""
    nats_tls_key_file: Path | None = None
    """Client key."""
    tenant: str | None = None
    """One tenant id, or ``None`` (``*`` in the environment) for every tenant."""
    concurrency: int = 16
    """Jobs run at once, over all step types of this process."""
    ack_wait_seconds: float = 30.0
    """Redelivery delay of an unacknowledged job; running jobs send in-progress acks well within it."""
    max_deliver: int = 10
    """Deliveries of one job message before JetStream gives up (the orchestrator's deadline re-dispatches)."""
    health_host: str = "127.0.0.1"
    """Bind address of the health endpoint (``0.0.0.0`` in containers)."""
    health_port: int | None = None
    """Serve ``GET /health/live``, ``/health/ready`` and ``/metrics`` here; ``None``: no HTTP server."""
    log_level: str = "INFO"
    """Log level of ``wf worker run`` (JSON lines on standard output)."""
    shutdown_timeout_seconds: float | None = None
    """How long a graceful shutdown waits for running jobs (``None``: as long as they take)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> WorkerSettings:
        """Read ``WF_WORKER_*`` from ``env`` (the process environment by default); ``overrides`` win.

        Raises:
            ValueError: a variable holds a value of the wrong type.
        """
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(ENV_PREFIX + name, "").strip()
            return value or None

        def path(name: str) -> Path | None:
            value = get(name)
            return Path(value) if value else None

        values: dict[str, Any] = {}
        for name, kind in (
            ("NATS_URL", str),
            ("NATS_TOKEN", str),
            ("NATS_USER", str),
            ("NATS_PASSWORD", str),
            ("HEALTH_HOST", str),
            ("LOG_LEVEL", str),
            ("CONCURRENCY", int),
            ("ACK_WAIT_SECONDS", float),
            ("MAX_DELIVER", int),
            ("HEALTH_PORT", int),
            ("SHUTDOWN_TIMEOUT_SECONDS", float),
        ):
            raw = get(name)
            if raw is not None:
                try:
                    values[name.lower()] = kind(raw)
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a valid {kind.__name__}") from None
        for name in ("NATS_CREDS_FILE", "NATS_TLS_CA_FILE", "NATS_TLS_CERT_FILE", "NATS_TLS_KEY_FILE"):
            value = path(name)
            if value is not None:
                values[name.lower()] = value
        tenant = get("TENANT")
        values["tenant"] = None if tenant in (None, "*") else tenant
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``: servers, authentication and TLS."""
        options: dict[str, Any] = {
            "servers": [url.strip() for url in self.nats_url.split(",") if url.strip()],
            # A worker outlives server restarts: reconnect for ever, jobs wait in the stream meanwhile.
            "max_reconnect_attempts": -1,
        }
        if self.nats_creds_file is not None:
            options["user_credentials"] = str(self.nats_creds_file)
        if self.nats_token:
            options["token"] = self.nats_token
        if self.nats_user:
            options["user"] = self.nats_user
            options["password"] = self.nats_password or ""
        if self.nats_tls_ca_file or self.nats_tls_cert_file:
            context = ssl.create_default_context(
                cafile=str(self.nats_tls_ca_file) if self.nats_tls_ca_file else None
            )
            if self.nats_tls_cert_file:
                context.load_cert_chain(
                    str(self.nats_tls_cert_file),
                    str(self.nats_tls_key_file) if self.nats_tls_key_file else None,
                )
            options["tls"] = context
        return options
