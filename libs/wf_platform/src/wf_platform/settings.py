"""Settings shared by every service, read once from ``<PREFIX>_*`` and the standard ``OTEL_*`` variables.

A service subclasses :class:`ServiceSettings` (a frozen, keyword-only dataclass) with its own fields and
builds it at the edge with :meth:`ServiceSettings.from_env`; tests construct settings directly and never
touch ``os.environ``. The names and defaults are pinned in ``docs/conventions.md``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, get_type_hints

__all__ = ["ServiceSettings", "SettingsError", "TelemetrySettings"]


class SettingsError(ValueError):
    """A variable has a value that cannot be used."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {message}")


@dataclass(frozen=True, kw_only=True)
class TelemetrySettings:
    """OpenTelemetry settings from the standard ``OTEL_*`` variables."""

    service_name: str
    """``OTEL_SERVICE_NAME``; defaults to the service's name."""
    traces_exporter: str = "otlp"
    """``OTEL_TRACES_EXPORTER``: ``otlp`` or ``none`` (``console`` prints spans, for debugging)."""
    otlp_endpoint: str | None = None
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``; the exporter reads the
    rest of the ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout) itself."""

    @property
    def enabled(self) -> bool:
        """Whether spans are exported at all."""
        return self.traces_exporter.lower() != "none"

    @classmethod
    def from_env(cls, service_name: str, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """Read the ``OTEL_*`` variables."""
        env = os.environ if env is None else env
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
        return cls(
            service_name=env.get("OTEL_SERVICE_NAME", service_name),
            traces_exporter=env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip() or "otlp",
            otlp_endpoint=endpoint or None,
        )


def _no_telemetry() -> TelemetrySettings:
    return TelemetrySettings(service_name="wf-service", traces_exporter="none")


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """What every service reads; subclass it for a service's own fields.

    Variables are ``<PREFIX>_<FIELD NAME IN UPPER CASE>``; tuples are comma-separated; booleans are
    ``true``/``false``. Secrets and keys come from files, never from the command line.
    """

    service_name: str = "wf-service"
    """Used for telemetry, metrics and logs; not read from the environment."""
    host: str = "127.0.0.1"
    """Bind address (``0.0.0.0`` in containers)."""
    port: int = 8000
    """HTTP port."""
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/wf"
    """The service's own database (created on start-up if missing)."""
    db_pool_size: int = 10
    """Pooled connections per process (no overflow: the pool is the limit)."""
    db_pool_timeout_seconds: float = 10.0
    """How long a request waits for a pooled connection."""
    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs."""
    nats_creds_file: Path | None = None
    nats_token: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    jwt_jwks_url: str | None = None
    """JWKS endpoint (production)."""
    jwt_public_key_file: Path | None = None
    """PEM public key (development), used when no JWKS URL is set."""
    jwt_public_key_pem: str | None = None
    """PEM public key given inline (tests); ``jwt_public_key_file`` wins when both are set."""
    jwt_issuer: str = "wf-dev"
    """Exact ``iss``."""
    jwt_audience: str = "wf"
    """Exact ``aud`` (one of the token's audiences must equal it)."""
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    """Accepted algorithms; the token's ``alg`` header only selects among these."""
    jwt_leeway_seconds: int = 30
    """Clock leeway for ``exp``, ``nbf`` and ``iat``."""
    jwt_jwks_min_refresh_seconds: float = 30.0
    """An unknown ``kid`` refreshes the JWKS at most this often."""
    jwt_jwks_max_age_seconds: float = 3600.0
    """A JWKS is refetched after this long even when every ``kid`` is known."""
    max_body_bytes: int = 1_048_576
    """Request body limit (413 above it)."""
    max_json_depth: int = 32
    """Nesting depth limit for JSON/YAML request documents (422 above it)."""
    log_level: str = "INFO"
    """JSON logs on stdout at this level."""
    access_log: bool = False
    """One log line per HTTP request (uvicorn's access log, as JSON with the tenant and trace ids).
    Off by default: every request is already counted and timed (``wf_http_requests_total``,
    ``wf_http_request_duration_seconds``) and is a span of its trace; a line costs ~25 us of CPU
    (formatting and the write, measured in process), ~0.5 % of the orchestrator's CPU per W1 start."""
    tenant_cache_seconds: float = 5.0
    """How long a tenant's status (active/suspended) is trusted without asking Postgres again."""
    outbox_poll_seconds: float = 1.0
    """The outbox relay's timer; it is also woken right after each commit that wrote outbox rows."""
    outbox_batch_size: int = 200
    """Rows per relay transaction."""
    outbox_mark_delay_seconds: float = 0.01
    """How long rows the relay published wait for a business statement to mark them sent before the
    relay marks them itself (:mod:`wf_platform.outbox`). Short: while a row is unmarked, another
    replica committing a message of the same key sees it as unsent and publishes through a pass."""
    telemetry: TelemetrySettings = field(default_factory=_no_telemetry)
    """From the ``OTEL_*`` variables."""

    @classmethod
    def from_env(
        cls,
        prefix: str,
        /,
        *,
        env: Mapping[str, str] | None = None,
        **defaults: Any,
    ) -> Self:
        """Build the settings from ``<prefix>_*`` variables over the given defaults.

        Args:
            prefix: e.g. ``DEFINITION_REGISTRY`` (without the trailing underscore).
            env: the variables (``os.environ`` when omitted).
            **defaults: service defaults (``service_name``, ``port``, ``database_url``...).
        """
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = dict(defaults)
        for f in dataclasses.fields(cls):
            if f.name in {"service_name", "telemetry", "jwt_public_key_pem"}:
                continue
            variable = f"{prefix}_{f.name.upper()}"
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(variable, raw, hints[f.name])
        service_name = str(values.get("service_name", "wf-service"))
        values["telemetry"] = TelemetrySettings.from_env(service_name, env)
        return cls(**values)

    @property
    def nats_servers(self) -> list[str]:
        """The NATS server URLs as a list."""
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]


def _convert(variable: str, raw: str, hint: Any) -> Any:
    text = str(hint)
    try:
        if hint is bool or text in {"bool", "<class 'bool'>"}:
            lowered = raw.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise SettingsError(variable, f"expected true or false, got {raw!r}")
            return lowered in {"true", "1", "yes"}
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if "tuple" in text:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if "Path" in text:
            return Path(raw)
    except ValueError as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(variable, f"cannot parse {raw!r}: {exc}") from exc
    return raw
