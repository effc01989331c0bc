"""``PlatformPlugin``: everything a service needs, wired into a Litestar app in one line.

    app = Litestar(
        route_handlers=[DefinitionController],
        plugins=[PlatformPlugin(PlatformConfig(settings=settings, tenant_migrations="registry:migrations"))],
    )

The plugin adds: HTTP metrics, OpenTelemetry and JWT middleware (``/v1`` needs a token), the
problem-details exception handlers, ``/health/live``, ``/health/ready``, ``/metrics``, the request
body limit and input guard (nesting depth, U+0000: :mod:`wf_platform.limits`), and a lifespan that
creates the database if missing, migrates the shared ``wf`` schema, connects NATS, provisions the
configured streams and runs the outbox relay and the event-loop lag sampler
(``wf_event_loop_lag_seconds``, :mod:`wf_platform.loop_lag`). Dependencies offered to
handlers: ``caller`` (:class:`~wf_platform.auth.Caller`), ``tenant_db``
(:class:`~wf_platform.db.TenantDatabase` of the caller's tenant) and ``platform`` (:class:`Platform`).
Route guards come from :func:`wf_platform.auth.requires_role`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins import InitPlugin
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from wf_platform.auth import (
    TENANT_GATE_STATE_KEY,
    Caller,
    JwksKeySource,
    JwtAuthMiddleware,
    JwtVerifier,
    KeySource,
    StaticKeySource,
    caller_from_connection,
)
from wf_platform.bus import EventBus, NatsEventBus, connect_nats
from wf_platform.db import PLATFORM_SCHEMA, TenantDatabase, create_engine, ensure_database, transaction_lock
from wf_platform.health import HealthCheck, health_routes
from wf_platform.limits import BodyLimitMiddleware, InputGuardMiddleware
from wf_platform.loop_lag import LoopLagMonitor
from wf_platform.metrics import HttpMetricsMiddleware, PlatformMetrics, metrics_route
from wf_platform.migrations import PLATFORM_MIGRATIONS, migration_lock, upgrade
from wf_platform.outbox import OutboxRelay
from wf_platform.problems import ServiceUnavailableError, exception_handlers
from wf_platform.settings import ServiceSettings
from wf_platform.streams import WF_EVENTS, StreamSpec, ensure_stream
from wf_platform.telemetry import RequestTracingMiddleware, install_tracer_provider
from wf_platform.tenancy import TenantId
from wf_platform.tenants import TenantRegistry

__all__ = ["Platform", "PlatformConfig", "PlatformPlugin", "get_platform", "migrate"]

logger = logging.getLogger("wf_platform")

PLATFORM_STATE_KEY = "wf_platform"
_STOP_STEP_SECONDS = 15.0


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    """How a service uses the platform."""

    settings: ServiceSettings
    tenant_migrations: str
    """Alembic script location of the tenant schema, e.g. ``definition_registry:migrations``."""
    streams: tuple[StreamSpec, ...] = (WF_EVENTS,)
    """Streams this service publishes to and therefore provisions at start-up."""
    protected_prefixes: tuple[str, ...] = ("/v1",)
    """Paths that need a bearer token."""
    key_source: KeySource | None = None
    """Overrides the key source derived from the settings (tests with a JWKS mock)."""
    bus: EventBus | None = None
    """Overrides the NATS bus (unit tests without a server); no NATS connection is made then."""
    run_outbox_relay: bool = True
    """Start the relay loop (tests may drive :meth:`OutboxRelay.run_once` themselves)."""
    api_title: str | None = None
    api_version: str = "1.0.0"
    extra_ready_checks: Mapping[str, HealthCheck] = field(default_factory=dict[str, HealthCheck])


def _key_source(settings: ServiceSettings) -> KeySource:
    if settings.jwt_jwks_url:
        return JwksKeySource(
            settings.jwt_jwks_url,
            min_refresh_seconds=settings.jwt_jwks_min_refresh_seconds,
            max_age_seconds=settings.jwt_jwks_max_age_seconds,
        )
    if settings.jwt_public_key_file is not None:
        return StaticKeySource.from_file(settings.jwt_public_key_file)
    if settings.jwt_public_key_pem:
        return StaticKeySource(settings.jwt_public_key_pem)
    raise ValueError(
        "configure JWT_JWKS_URL or JWT_PUBLIC_KEY_FILE: refusing to start without a way to verify tokens"
    )


class Platform:
    """The running plumbing of one app: engine, tenants, NATS, bus, outbox relay, metrics, verifier."""

    def __init__(self, config: PlatformConfig, /) -> None:
        self.config = config
        self.settings = config.settings
        self.metrics = PlatformMetrics(self.settings.service_name)
        self.loop_lag = LoopLagMonitor(self.metrics.loop_lag)
        self.verifier = JwtVerifier(
            config.key_source or _key_source(self.settings),
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            algorithms=self.settings.jwt_algorithms,
            leeway_seconds=self.settings.jwt_leeway_seconds,
        )
        self._engine: AsyncEngine | None = None
        self._tenants: TenantRegistry | None = None
        self._relay: OutboxRelay | None = None
        self._bus: EventBus | None = config.bus
        self.nats: NatsClient | None = None
        self.js: JetStreamContext | None = None

    # -- accessors that fail clearly before start-up --------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The service database engine."""
        if self._engine is None:
            raise ServiceUnavailableError("the service is starting")
        return self._engine

    @property
    def tenants(self) -> TenantRegistry:
        """The tenant registry."""
        if self._tenants is None:
            raise ServiceUnavailableError("the service is starting")
        return self._tenants

    @property
    def relay(self) -> OutboxRelay:
        """The outbox relay."""
        if self._relay is None:
            raise ServiceUnavailableError("the service is starting")
        return self._relay

    @property
    def bus(self) -> EventBus:
        """The event bus (JetStream, or the configured fake)."""
        if self._bus is None:
            raise ServiceUnavailableError("the service is starting")
        return self._bus

    def tenant_db(self, tenant: TenantId, /) -> TenantDatabase:
        """Units of work in ``tenant``'s schema (the tenant must have passed the gate)."""
        relay = self._relay
        return TenantDatabase(
            self.engine, tenant, on_outbox_commit=relay.committed if relay else lambda _: None, marks=relay
        )

    async def ensure_active(self, tenant: TenantId, /) -> None:
        """The :class:`~wf_platform.auth.TenantGate`: provision on first use, 403 when suspended."""
        await self.tenants.ensure_active(tenant)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Database (created if missing, shared schema migrated), NATS, streams, relay."""
        settings = self.settings
        await ensure_database(settings.database_url)
        self._engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        await migrate_platform_schema(self._engine)
        self._tenants = TenantRegistry(
            self._engine,
            script_location=self.config.tenant_migrations,
            cache_seconds=settings.tenant_cache_seconds,
            on_provisioned=lambda _: self.metrics.tenants_provisioned.inc(),
        )
        if self._bus is None:
            self.nats = await connect_nats(settings)
            self.js = self.nats.jetstream()  # pyright: ignore[reportUnknownMemberType]
            for spec in self.config.streams:
                await ensure_stream(self.js, spec)
            self._bus = NatsEventBus(self.js)
        self._relay = OutboxRelay(
            self._engine,
            self._bus,
            metrics=self.metrics,
            poll_seconds=settings.outbox_poll_seconds,
            batch_size=settings.outbox_batch_size,
            mark_delay_seconds=settings.outbox_mark_delay_seconds,
        )
        if self.config.run_outbox_relay:
            self._relay.start()
        self.loop_lag.start()
        logger.info("%s started", settings.service_name)

    async def stop(self) -> None:
        """Stop the relay, drain NATS, dispose of the engine; each step bounded in time.

        A shutdown must end even when a dependency hangs (a database that stopped answering, a
        NATS server paused): what did not finish in time is logged and left to the process exit.
        """
        self.loop_lag.stop()
        steps: list[tuple[str, Any]] = []
        if self._relay is not None:
            steps.append(("outbox relay", self._relay.stop()))
        if self.nats is not None:
            steps.append(("nats drain", self.nats.drain()))
            self.nats = None
        if isinstance(self.verifier.keys, JwksKeySource):
            steps.append(("jwks client", self.verifier.keys.aclose()))
        if self._engine is not None:
            steps.append(("database pool", self._engine.dispose()))
        for name, step in steps:
            try:
                await asyncio.wait_for(step, timeout=_STOP_STEP_SECONDS)
            except TimeoutError:
                logger.warning("stopping the %s took longer than %ss; going on", name, _STOP_STEP_SECONDS)
            except Exception as exc:
                logger.warning("stopping the %s failed: %s", name, exc)

    def ready_checks(self) -> dict[str, HealthCheck]:
        """Postgres and NATS (plus the service's own)."""

        async def postgres() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        async def nats_check() -> None:
            if self.config.bus is not None:
                return
            if self.nats is None or not self.nats.is_connected:
                raise ConnectionError("not connected")

        return {"postgres": postgres, "nats": nats_check, **self.config.extra_ready_checks}


async def migrate_platform_schema(engine: AsyncEngine, /) -> None:
    """Bring the shared ``wf`` schema to head (under an advisory lock: replicas start together)."""
    async with migration_lock(), engine.begin() as conn:
        await transaction_lock(conn, "wf.platform")
        await conn.run_sync(
            lambda sync: upgrade(sync, script_location=PLATFORM_MIGRATIONS, schema=PLATFORM_SCHEMA)
        )


async def migrate(config: PlatformConfig, /, *, tenants: tuple[str, ...] = ()) -> list[TenantId]:
    """The ``migrate`` admin command: database, shared schema, every known tenant plus ``tenants``."""
    from wf_platform.tenancy import validate_tenant_id

    settings = config.settings
    await ensure_database(settings.database_url)
    engine = create_engine(settings.database_url, pool_size=2, command_timeout=None)
    try:
        await migrate_platform_schema(engine)
        registry = TenantRegistry(engine, script_location=config.tenant_migrations, cache_seconds=0)
        for tenant in tenants:
            await registry.provision(validate_tenant_id(tenant))
        return await registry.migrate_all()
    finally:
        await engine.dispose()


def get_platform(app: Litestar, /) -> Platform:
    """The :class:`Platform` of an app built with :class:`PlatformPlugin`."""
    platform = app.state.get(PLATFORM_STATE_KEY)
    if not isinstance(platform, Platform):
        raise LookupError("this app has no PlatformPlugin")
    return platform


class PlatformPlugin(InitPlugin):
    """Wires the platform into an app (see the module docstring)."""

    __slots__ = ("config", "platform")

    def __init__(self, config: PlatformConfig, /) -> None:
        self.config = config
        self.platform = Platform(config)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add middleware, handlers, routes, dependencies, limits and the lifespan."""
        platform = self.platform
        settings = self.config.settings
        provider = install_tracer_provider(settings.telemetry)
        otel = OpenTelemetryConfig(
            tracer_provider=provider,
            exclude=["^/health", "^/metrics", "^/schema"],
        )
        app_config.middleware = [
            DefineMiddleware(HttpMetricsMiddleware, metrics=platform.metrics),
            DefineMiddleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
            DefineMiddleware(RequestTracingMiddleware, traced=otel.middleware),
            DefineMiddleware(
                JwtAuthMiddleware,
                verifier=lambda: platform.verifier,
                protected_prefixes=self.config.protected_prefixes,
            ),
            DefineMiddleware(InputGuardMiddleware, max_depth=settings.max_json_depth),
            *app_config.middleware,
        ]
        app_config.exception_handlers = {**exception_handlers(), **app_config.exception_handlers}  # pyright: ignore[reportUnknownMemberType]
        app_config.route_handlers = [
            *app_config.route_handlers,
            *health_routes(platform.ready_checks),
            metrics_route(platform.metrics),
        ]

        def provide_caller(request: Request[Any, Any, Any]) -> Caller:
            return caller_from_connection(request)

        def provide_tenant_db(caller: NamedDependency[Caller]) -> TenantDatabase:
            return platform.tenant_db(caller.tenant)

        def provide_platform() -> Platform:
            return platform

        app_config.dependencies = {
            "caller": Provide(provide_caller, sync_to_thread=False),
            "tenant_db": Provide(provide_tenant_db, sync_to_thread=False),
            "platform": Provide(provide_platform, sync_to_thread=False),
            **app_config.dependencies,
        }
        # Logging is configured once by the process (wf_platform.logs.configure_logging, JSON on stdout),
        # not by each app: Litestar's default would install its own plain-text handlers.
        app_config.logging_config = None
        app_config.state[PLATFORM_STATE_KEY] = platform
        app_config.state[TENANT_GATE_STATE_KEY] = platform
        title = self.config.api_title or settings.service_name
        if app_config.openapi_config is None or app_config.openapi_config.title == "Litestar API":
            app_config.openapi_config = OpenAPIConfig(
                title=title,
                version=self.config.api_version,
                components=Components(
                    security_schemes={
                        "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                    }
                ),
                security=[{"bearer": []}],
            )
        app_config.lifespan = [*app_config.lifespan, self._lifespan]  # pyright: ignore[reportUnknownMemberType]
        return app_config

    @asynccontextmanager
    async def _lifespan(self, _: Litestar) -> AsyncGenerator[None]:
        await self.platform.start()
        try:
            yield
        finally:
            await self.platform.stop()
