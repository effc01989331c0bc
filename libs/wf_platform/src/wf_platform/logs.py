"""JSON logs on stdout with the tenant and trace ids of the current request or message.

The tenant comes from :data:`tenant_var` (set by the auth middleware and by NATS consumers); trace and
span ids come from the current OpenTelemetry span. One line per record, e.g.::

    {"ts": "2025-01-01T00:00:00.000Z", "level": "INFO", "logger": "definition_registry",
     "message": "registered", "service": "definition-registry", "tenant": "acme",
     "trace_id": "4bf9...", "span_id": "00f0..."}
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "configure_logging", "tenant_var"]

tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("wf_tenant", default=None)
"""The tenant the current task works for (``None`` outside a tenant's request or message)."""

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object per line."""

    def __init__(self, *, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        tenant = tenant_var.get()
        if tenant is not None:
            entry["tenant"] = tenant
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, service: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON (call once, in ``__main__``)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service=service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
