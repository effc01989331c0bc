"""HTTP: convert, call the service once, return a Struct. Routes of DESIGN.md §4.

The orchestrator reads definitions with ``GET /v1/definitions/{name}/versions/{version}`` (a pinned
version) and ``GET /v1/definitions/{name}`` (the latest non-deprecated version by semver); see
``docs/registry.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from definition_registry.services import (
    DefinitionList,
    DefinitionRecord,
    DefinitionService,
    GraphView,
    ValidationReport,
    VersionList,
    VersionSummary,
)
from wf_platform.auth import requires_any_role, requires_role

__all__ = ["DefinitionController"]

# Whoever may start instances may read the definitions they start: the orchestrator resolves a
# definition with the caller's own token.
READ = requires_any_role("definitions:read", "instances:write")
WRITE = requires_role("definitions:write")


class DefinitionController(Controller):
    """``/v1/definitions``: register, validate, read, graph, deprecate."""

    path = "/v1/definitions"
    tags = ["definitions"]

    @post("/", guards=[WRITE], status_code=HTTP_201_CREATED, summary="Register a definition version")
    async def register(
        self, request: Request[Any, Any, Any], definitions: NamedDependency[DefinitionService]
    ) -> Response[DefinitionRecord]:
        """Register a version (JSON or YAML): 201 new, 200 identical, 409 other content, 422 invalid."""
        record, created = await definitions.register(
            await request.body(), content_type=request.headers.get("content-type")
        )
        return Response(
            record,
            status_code=HTTP_201_CREATED if created else HTTP_200_OK,
            headers={"Location": f"/v1/definitions/{record.name}/versions/{record.version}"},
        )

    @post("/validate", guards=[WRITE], status_code=HTTP_200_OK, summary="Validate without storing")
    async def validate(
        self, request: Request[Any, Any, Any], definitions: NamedDependency[DefinitionService]
    ) -> ValidationReport:
        """200 with the name, version and digest when valid; 422 listing every error otherwise."""
        return definitions.validate(await request.body(), content_type=request.headers.get("content-type"))

    @get("/", guards=[READ], summary="The latest version of each definition")
    async def list_definitions(self, definitions: NamedDependency[DefinitionService]) -> DefinitionList:
        """Every definition of the caller's tenant with its latest version."""
        return await definitions.list_latest()

    @get("/{name:str}", guards=[READ], summary="The latest non-deprecated version (semver order)")
    async def get_latest(
        self, name: FromPath[str], definitions: NamedDependency[DefinitionService]
    ) -> DefinitionRecord:
        """The latest version that new instances may start on, with its wire form."""
        return await definitions.get_latest(name)

    @get("/{name:str}/versions", guards=[READ], summary="Every version, newest first")
    async def list_versions(
        self, name: FromPath[str], definitions: NamedDependency[DefinitionService]
    ) -> VersionList:
        """Every version of a definition (semver order, newest first)."""
        return await definitions.list_versions(name)

    @get("/{name:str}/versions/{version:str}", guards=[READ], summary="One version with its wire form")
    async def get_version(
        self, name: FromPath[str], version: FromPath[str], definitions: NamedDependency[DefinitionService]
    ) -> DefinitionRecord:
        """One version, deprecated or not (running instances keep their version)."""
        return await definitions.get_version(name, version)

    @get("/{name:str}/versions/{version:str}/graph", guards=[READ], summary="The version's graph")
    async def graph(
        self,
        name: FromPath[str],
        version: FromPath[str],
        definitions: NamedDependency[DefinitionService],
        format: FromQuery[Literal["mermaid", "json"]] = "mermaid",
    ) -> GraphView:
        """``format=mermaid`` (default) or ``format=json`` (nodes and edges)."""
        return await definitions.graph(name, version, format=format)

    @post(
        "/{name:str}/versions/{version:str}/deprecate",
        guards=[WRITE],
        status_code=HTTP_200_OK,
        summary="Deprecate a version",
    )
    async def deprecate(
        self, name: FromPath[str], version: FromPath[str], definitions: NamedDependency[DefinitionService]
    ) -> VersionSummary:
        """No new instances on this version; running ones continue. Idempotent."""
        return await definitions.deprecate(name, version)
