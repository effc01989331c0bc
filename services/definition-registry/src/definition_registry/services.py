"""The registry's rules: registration (idempotent, immutable), reads in semver order, deprecation.

Errors (each a problem-details error of wf_platform, so the HTTP mapping is the platform's one):

    RegistryError (marker)
    ├── DefinitionNotFoundError      404 definition_not_found (also another tenant's definition)
    ├── NoActiveVersionError         404 no_active_version (every version is deprecated)
    ├── VersionConflictError         409 version_conflict (same version, other content)
    └── InvalidDefinitionError       422 invalid_definition (every error with its path)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from definition_registry.repositories import DefinitionRepository, DefinitionRow, VersionRow
from wf_platform.auth import Caller
from wf_platform.db import TenantDatabase
from wf_platform.limits import parse_document
from wf_platform.problems import ConflictError, FieldError, NotFoundError, UnprocessableError
from wf_platform.telemetry import span
from workflow_core import DefinitionInvalidError, Version, WorkflowDefinition, load_definition
from workflow_core.graph import definition_graph
from workflow_core.mermaid import definition_to_mermaid
from workflow_core.messages import DefinitionPublished
from workflow_core.subjects import definition_published_subject

__all__ = [
    "DefinitionList",
    "DefinitionNotFoundError",
    "DefinitionRecord",
    "DefinitionService",
    "DefinitionSummary",
    "GraphView",
    "InvalidDefinitionError",
    "NoActiveVersionError",
    "RegistryError",
    "ValidationReport",
    "VersionConflictError",
    "VersionList",
    "VersionSummary",
]

logger = logging.getLogger("definition_registry")


class RegistryError(Exception):
    """Marker base of the registry's errors."""


class DefinitionNotFoundError(NotFoundError, RegistryError):
    """No such definition or version in the caller's tenant."""

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        what = f"definition {name!r}" + (f" version {version!r}" if version else "")
        super().__init__(f"{what} not found", code="definition_not_found")


class NoActiveVersionError(NotFoundError, RegistryError):
    """Every version of the definition is deprecated."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"every version of definition {name!r} is deprecated", code="no_active_version")


class VersionConflictError(ConflictError, RegistryError):
    """The version exists with other content; versions are immutable."""

    def __init__(self, name: str, version: str, existing_digest: str) -> None:
        self.name = name
        self.version = version
        self.existing_digest = existing_digest
        super().__init__(
            f"{name} {version} is already registered with other content ({existing_digest}); "
            "register a new version",
            code="version_conflict",
        )


class InvalidDefinitionError(UnprocessableError, RegistryError):
    """The definition has errors; ``errors`` lists all of them."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(
            f"the definition has {len(errors)} error(s)", code="invalid_definition", errors=list(errors)
        )


# -- what the API returns -------------------------------------------------------------------------


class VersionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A stored version, without its content."""

    name: str
    version: str
    description: str
    digest: str
    """``sha256:<hex>`` of the canonical JSON of the wire form."""
    author: str
    """The ``sub`` of whoever registered it."""
    created_at: datetime
    deprecated: bool
    deprecated_at: datetime | None = None
    deprecated_by: str | None = None


class DefinitionRecord(VersionSummary, frozen=True, kw_only=True):
    """A stored version with its wire form (what the orchestrator runs)."""

    definition: dict[str, Any]


class VersionList(msgspec.Struct, frozen=True, kw_only=True):
    """The versions of one definition, newest (semver) first."""

    name: str
    versions: list[VersionSummary]


class DefinitionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One definition: its latest version (the latest non-deprecated one if any)."""

    name: str
    latest_version: str
    description: str
    digest: str
    author: str
    created_at: datetime
    deprecated: bool
    version_count: int


class DefinitionList(msgspec.Struct, frozen=True, kw_only=True):
    """Every definition of the tenant, by name."""

    items: list[DefinitionSummary]


class ValidationReport(msgspec.Struct, frozen=True, kw_only=True):
    """A valid definition (invalid ones are 422 problems)."""

    valid: bool
    name: str
    version: str
    digest: str


class GraphView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A version's graph as Mermaid text or as nodes and edges."""

    name: str
    version: str
    format: Literal["mermaid", "json"]
    mermaid: str | None = None
    graph: dict[str, Any] | None = None


def _summary(row: VersionRow) -> VersionSummary:
    return VersionSummary(
        name=row.name,
        version=row.version,
        description=row.description,
        digest=row.digest,
        author=row.author,
        created_at=row.created_at,
        deprecated=row.deprecated_at is not None,
        deprecated_at=row.deprecated_at,
        deprecated_by=row.deprecated_by,
    )


def _record(row: DefinitionRow) -> DefinitionRecord:
    # A record is the version's summary plus its wire form.
    return DefinitionRecord(**msgspec.structs.asdict(_summary(row)), definition=row.content)


def _semver_key(row: VersionRow) -> Version:
    return Version.parse(row.version)


def _latest(rows: Sequence[VersionRow], *, active_only: bool) -> VersionRow | None:
    candidates = [r for r in rows if r.deprecated_at is None] if active_only else list(rows)
    return max(candidates, key=_semver_key) if candidates else None


class DefinitionService:
    """Definition operations for one caller in its tenant."""

    def __init__(
        self, tenant_db: TenantDatabase, caller: Caller, /, *, max_depth: int = 32, max_bytes: int = 262_144
    ) -> None:
        self.db = tenant_db
        self.caller = caller
        self.max_depth = max_depth
        self.max_bytes = max_bytes

    def parse(self, body: bytes, /, *, content_type: str | None) -> WorkflowDefinition:
        """Parse JSON or YAML within the limits and validate it completely."""
        document, _ = parse_document(
            body, content_type=content_type, max_depth=self.max_depth, max_bytes=self.max_bytes
        )
        if not isinstance(document, dict):
            raise InvalidDefinitionError([FieldError(path="", message="a definition must be an object")])
        mapping: dict[str, Any] = document  # pyright: ignore[reportUnknownVariableType]
        try:
            return load_definition(mapping)
        except DefinitionInvalidError as exc:
            raise InvalidDefinitionError(
                [FieldError(path=issue.path, message=issue.message) for issue in exc.errors]
            ) from None

    def validate(self, body: bytes, /, *, content_type: str | None) -> ValidationReport:
        """Validate without storing."""
        definition = self.parse(body, content_type=content_type)
        return ValidationReport(
            valid=True, name=definition.name, version=definition.version, digest=definition.digest
        )

    async def register(self, body: bytes, /, *, content_type: str | None) -> tuple[DefinitionRecord, bool]:
        """Store a new version and publish ``definition.published``; return it and whether it is new.

        The same version with the same content is a no-op (idempotent retry); with other content it
        is a :class:`VersionConflictError`.
        """
        definition = self.parse(body, content_type=content_type)
        wire = definition.to_wire()
        digest = definition.digest
        tenant = self.caller.tenant
        with span("registry.register", tenant=tenant, definition=definition.name, version=definition.version):
            async with self.db.transaction() as uow:
                repo = DefinitionRepository(uow.conn)
                row = await repo.insert_if_absent(
                    name=definition.name,
                    version=definition.version,
                    description=definition.description,
                    content=wire,
                    digest=digest,
                    author=self.caller.sub,
                )
                if row is None:
                    existing = await repo.get(definition.name, definition.version)
                    if existing is None:  # pragma: no cover - rows are never deleted
                        raise DefinitionNotFoundError(definition.name, definition.version)
                    if existing.digest != digest:
                        raise VersionConflictError(definition.name, definition.version, existing.digest)
                    return _record(existing), False
                event = DefinitionPublished(
                    tenant=tenant,
                    name=row.name,
                    version=row.version,
                    digest=row.digest,
                    author=row.author,
                    published_at=row.created_at.astimezone(UTC).isoformat(),
                )
                await uow.publish(
                    definition_published_subject(tenant),
                    msgspec.json.encode(event),
                    # Stable across relay retries: JetStream drops a republished copy.
                    msg_id=f"definition.published:{tenant}:{row.name}:{row.version}",
                    ordering_key=f"definition:{row.name}",
                )
        logger.info("registered %s %s (%s)", row.name, row.version, row.digest)
        return _record(row), True

    async def get_version(self, name: str, version: str, /) -> DefinitionRecord:
        """One version with its wire form."""
        async with self.db.transaction() as uow:
            row = await DefinitionRepository(uow.conn).get(name, version)
        if row is None:
            raise DefinitionNotFoundError(name, version)
        return _record(row)

    async def get_latest(self, name: str, /) -> DefinitionRecord:
        """The latest non-deprecated version by semver."""
        async with self.db.transaction() as uow:
            repo = DefinitionRepository(uow.conn)
            rows = await repo.versions(name)
            if not rows:
                raise DefinitionNotFoundError(name)
            latest = _latest(rows, active_only=True)
            if latest is None:
                raise NoActiveVersionError(name)
            row = await repo.get(name, latest.version)
        if row is None:  # pragma: no cover - rows are never deleted
            raise DefinitionNotFoundError(name, latest.version)
        return _record(row)

    async def list_versions(self, name: str, /) -> VersionList:
        """Every version of a definition, newest first."""
        async with self.db.transaction() as uow:
            rows = await DefinitionRepository(uow.conn).versions(name)
        if not rows:
            raise DefinitionNotFoundError(name)
        ordered = sorted(rows, key=_semver_key, reverse=True)
        return VersionList(name=name, versions=[_summary(r) for r in ordered])

    async def list_latest(self) -> DefinitionList:
        """The latest version of each definition (non-deprecated preferred)."""
        async with self.db.transaction() as uow:
            rows = await DefinitionRepository(uow.conn).all_versions()
        by_name: dict[str, list[VersionRow]] = {}
        for row in rows:
            by_name.setdefault(row.name, []).append(row)
        items: list[DefinitionSummary] = []
        for name in sorted(by_name):
            versions = by_name[name]
            latest = _latest(versions, active_only=True) or _latest(versions, active_only=False)
            assert latest is not None
            items.append(
                DefinitionSummary(
                    name=name,
                    latest_version=latest.version,
                    description=latest.description,
                    digest=latest.digest,
                    author=latest.author,
                    created_at=latest.created_at,
                    deprecated=latest.deprecated_at is not None,
                    version_count=len(versions),
                )
            )
        return DefinitionList(items=items)

    async def graph(self, name: str, version: str, /, *, format: Literal["mermaid", "json"]) -> GraphView:
        """The version's graph."""
        record = await self.get_version(name, version)
        definition = load_definition(record.definition)
        if format == "mermaid":
            return GraphView(
                name=name, version=version, format="mermaid", mermaid=definition_to_mermaid(definition)
            )
        return GraphView(name=name, version=version, format="json", graph=definition_graph(definition))

    async def deprecate(self, name: str, version: str, /) -> VersionSummary:
        """Deprecate a version: no new instances start on it; running ones continue."""
        async with self.db.transaction() as uow:
            row = await DefinitionRepository(uow.conn).deprecate(name, version, by=self.caller.sub)
        if row is None:
            raise DefinitionNotFoundError(name, version)
        logger.info("deprecated %s %s", name, version)
        return _summary(row)
