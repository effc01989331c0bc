"""The message bus port, its NATS JetStream adapter and an in-memory fake.

Services depend on :class:`EventBus`; the outbox relay is its main user. A publish carries a stable
``Nats-Msg-Id`` (JetStream drops a duplicate inside the stream's duplicate window) and a ``traceparent``
(the one stored with the message, else the current span's).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from wf_platform.settings import ServiceSettings
from wf_platform.telemetry import inject_trace_headers

__all__ = [
    "EventBus",
    "InMemoryEventBus",
    "NatsEventBus",
    "PublishError",
    "PublishedMessage",
    "connect_nats",
]

logger = logging.getLogger("wf_platform.bus")


class PublishError(Exception):
    """A message was not accepted by the bus (no ack, no stream, timeout)."""

    def __init__(self, subject: str, msg_id: str, reason: str) -> None:
        self.subject = subject
        self.msg_id = msg_id
        self.reason = reason
        super().__init__(f"publish of {msg_id} to {subject} failed: {reason}")


class EventBus(Protocol):
    """Publishes durable messages."""

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish and wait until the bus has stored the message; raise :class:`PublishError`."""
        ...


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    """A message the in-memory bus accepted."""

    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] = field(default_factory=dict[str, str])


class InMemoryEventBus:
    """An :class:`EventBus` for unit tests: keeps messages, drops duplicate ids like JetStream does."""

    def __init__(self) -> None:
        self.messages: list[PublishedMessage] = []
        self._seen: set[str] = set()
        self.fail_next: int = 0
        """Make the next N publishes raise :class:`PublishError` (to test retries)."""

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Store the message unless its id was seen."""
        if self.fail_next > 0:
            self.fail_next -= 1
            raise PublishError(subject, msg_id, "injected failure")
        if msg_id in self._seen:
            return
        self._seen.add(msg_id)
        all_headers = inject_trace_headers(dict(headers or {}))
        self.messages.append(PublishedMessage(subject, payload, msg_id, all_headers))


class NatsEventBus:
    """An :class:`EventBus` on JetStream."""

    def __init__(self, js: JetStreamContext, /, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout
        self.duplicates = 0
        """Publishes JetStream acknowledged as duplicates (already stored earlier)."""

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """JetStream publish with ``Nats-Msg-Id`` and ``traceparent``; waits for the ack."""
        all_headers: dict[str, Any] = inject_trace_headers(dict(headers or {}))
        all_headers["Nats-Msg-Id"] = msg_id
        try:
            ack = await self._js.publish(subject, payload, timeout=self._timeout, headers=all_headers)
        except Exception as exc:
            raise PublishError(subject, msg_id, f"{type(exc).__name__}: {exc}") from exc
        if ack.duplicate:
            self.duplicates += 1


async def connect_nats(
    settings: ServiceSettings, /, *, name: str | None = None, deadline_seconds: float = 30.0
) -> NatsClient:
    """Connect with the settings' servers, credentials and TLS; reconnects forever once connected.

    The first connection must succeed within ``deadline_seconds`` (nats-py would otherwise retry an
    unreachable server forever and the service would hang in start-up instead of failing visibly).
    """
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": name or settings.service_name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "connect_timeout": 5,
        "allow_reconnect": True,
    }
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_token:
        options["token"] = settings.nats_token
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_tls_ca_file or settings.nats_tls_cert_file:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file else None
        )
        if settings.nats_tls_cert_file and settings.nats_tls_key_file:
            context.load_cert_chain(str(settings.nats_tls_cert_file), str(settings.nats_tls_key_file))
        options["tls"] = context

    async def _error_cb(exc: Exception) -> None:
        logger.warning("nats: %s", exc)

    async def _disconnected_cb() -> None:
        logger.warning("nats: disconnected")

    async def _reconnected_cb() -> None:
        logger.info("nats: reconnected")

    options.update(error_cb=_error_cb, disconnected_cb=_disconnected_cb, reconnected_cb=_reconnected_cb)
    try:
        return await asyncio.wait_for(nats.connect(**options), timeout=deadline_seconds)  # pyright: ignore[reportUnknownMemberType]
    except TimeoutError:
        raise ConnectionError(
            f"no NATS server reachable at {', '.join(settings.nats_servers)} within {deadline_seconds}s"
        ) from None
