"""The inbox's running parts beyond the platform: the task consumer, the orchestrator client (for the
graph on the task page), web sessions, and the plugin that wires them in (inside the platform's
lifespan)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.plugins import InitPlugin

from task_inbox.consumers import PullConsumer, TaskMessageHandler, consumer_for
from task_inbox.metrics import InboxMetrics
from task_inbox.services import TaskService
from task_inbox.settings import Settings
from wf_platform.auth import Caller, InvalidTokenError
from wf_platform.db import TenantDatabase
from wf_platform.plugin import Platform, PlatformPlugin

__all__ = ["Inbox", "InboxPlugin", "WebSession", "get_inbox"]

logger = logging.getLogger("task_inbox")

SESSION_COOKIE = "wf_inbox_session"


@dataclass(frozen=True, slots=True)
class WebSession:
    """A verified caller of a web page and the token it came with (to call the orchestrator as it)."""

    caller: Caller
    token: str
    source: str
    """``header`` (the OIDC proxy) or ``cookie`` (dev sign-in)."""


class Inbox:
    """Consumer, orchestrator client, sessions; see the module docstring."""

    def __init__(self, platform: Platform, settings: Settings) -> None:
        self.platform = platform
        self.settings = settings
        self.metrics = InboxMetrics(platform.metrics.registry)
        self.consumer: PullConsumer | None = None
        self._http: httpx.AsyncClient | None = None
        self._dev_key: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming task messages (after the platform connected NATS)."""
        self._http = httpx.AsyncClient(base_url=self.settings.orchestrator_url, timeout=3.0)
        nc = self.platform.nats
        if nc is None or self.platform.js is None:
            return
        handler = TaskMessageHandler(
            tenant_db=self.platform.tenant_db, provision=self.platform.tenants.status, metrics=self.metrics
        )
        self.consumer = consumer_for(
            nc,
            handler,
            durable=self.settings.consumer_durable,
            tenant=self.settings.consumer_tenant,
            batch=self.settings.consumer_batch,
            ack_wait=self.settings.consumer_ack_wait_seconds,
        )
        self.consumer.start()

    async def stop(self) -> None:
        """Stop consuming; close the HTTP client."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self._http is not None:
            await self._http.aclose()

    # -- per request -------------------------------------------------------------------------------

    def task_service(self, caller: Caller, /) -> TaskService:
        """The rules, as ``caller``."""
        return TaskService(
            self.platform.tenant_db(caller.tenant),
            caller,
            metrics=self.metrics,
            page_size_max=self.settings.page_size_max,
        )

    async def web_session(self, request: Request[Any, Any, Any], /) -> WebSession | None:
        """The verified caller of a page: the proxy's bearer header, else the dev session cookie."""
        token: str | None = None
        source = "header"
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()
        else:
            token = request.cookies.get(SESSION_COOKIE) or None
            source = "cookie"
        if not token:
            return None
        try:
            caller = await self.platform.verifier.verify(token)
        except InvalidTokenError as exc:
            logger.info("web token refused: %s", exc.reason)
            return None
        return WebSession(caller=caller, token=token, source=source)

    async def instance_graph(self, instance_id: str, /, *, token: str) -> str | None:
        """The instance's Mermaid graph from the orchestrator, as the caller; ``None`` if unavailable."""
        if self._http is None:
            return None
        try:
            response = await self._http.get(
                f"/v1/instances/{instance_id}/graph",
                params={"format": "mermaid"},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if response.status_code != 200:
                logger.info("graph of %s unavailable: HTTP %s", instance_id, response.status_code)
                return None
            body: Any = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("graph of %s unavailable: %s", instance_id, exc)
            return None
        mermaid = body.get("mermaid") if isinstance(body, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        return mermaid if isinstance(mermaid, str) else None

    def dev_private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None:
        """The key the dev sign-in signs with (loaded once)."""
        if self._dev_key is None:
            settings = self.settings
            pem: bytes | None = None
            if settings.dev_private_key_file is not None:
                pem = settings.dev_private_key_file.read_bytes()
            elif settings.dev_private_key_pem:
                pem = settings.dev_private_key_pem.encode()
            if pem is None:
                return None
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError("the dev private key must be RSA or EC")
            self._dev_key = key
        key_loaded: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = self._dev_key
        return key_loaded


class InboxPlugin(InitPlugin):
    """Adds the inbox's lifespan (inside the platform's) and its dependencies."""

    def __init__(self, platform_plugin: PlatformPlugin, settings: Settings) -> None:
        self.inbox = Inbox(platform_plugin.platform, settings)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Dependencies ``tasks`` (the API's service) and ``inbox``; the lifespan."""
        inbox = self.inbox

        def provide_tasks(
            tenant_db: NamedDependency[TenantDatabase], caller: NamedDependency[Caller]
        ) -> TaskService:
            return TaskService(
                tenant_db, caller, metrics=inbox.metrics, page_size_max=inbox.settings.page_size_max
            )

        def provide_inbox() -> Inbox:
            return inbox

        app_config.dependencies = {
            **app_config.dependencies,
            "tasks": Provide(provide_tasks, sync_to_thread=False),
            "inbox": Provide(provide_inbox, sync_to_thread=False),
        }
        app_config.state["inbox"] = inbox

        @asynccontextmanager
        async def lifespan(_: Litestar) -> AsyncGenerator[None]:
            await inbox.start()
            try:
                yield
            finally:
                await inbox.stop()

        app_config.lifespan = [*app_config.lifespan, lifespan]  # pyright: ignore[reportUnknownMemberType]
        return app_config


def get_inbox(app: Litestar, /) -> Inbox:
    """The :class:`Inbox` of an app built by :func:`task_inbox.app.create_app`."""
    found = app.state.get("inbox")
    if not isinstance(found, Inbox):
        raise LookupError("not a task-inbox app")
    return found
