"""HTTP: ``/v1/instances``. Handlers only convert: one service call each."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from orchestrator.services import (
    GraphView,
    HistoryView,
    InstanceList,
    InstanceService,
    InstanceView,
    StartInstance,
)
from wf_platform.auth import requires_role

__all__ = ["CancelInstance", "InstanceController", "RetryInstance", "SendSignal"]

READ = requires_role("instances:read")
WRITE = requires_role("instances:write")


class CancelInstance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/instances/{id}/cancel``."""

    reason: str = ""


class RetryInstance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/instances/{id}/retry``: optionally fix the context first."""

    data: dict[str, Any] = {}


class SendSignal(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/instances/{id}/signals/{name}``."""

    data: dict[str, Any] = {}


def _bearer(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    return header.split(" ", 1)[1].strip() if " " in header else ""


class InstanceController(Controller):
    """Start, observe and steer instances of the caller's tenant."""

    path = "/v1/instances"
    tags = ["instances"]

    @post("/", guards=[WRITE], status_code=HTTP_201_CREATED, summary="Start an instance")
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[StartInstance],
        instances: NamedDependency[InstanceService],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> InstanceView:
        """Start an instance of a definition (the latest non-deprecated version unless one is named)."""
        return await instances.start(data, token=_bearer(request), idempotency_key=idempotency_key)

    @get("/", guards=[READ], summary="List instances, newest first")
    async def list_instances(
        self,
        instances: NamedDependency[InstanceService],
        status: FromQuery[str | None] = None,
        definition: FromQuery[str | None] = None,
        business_key: FromQuery[str | None] = None,
        limit: FromQuery[int] = 50,
        cursor: FromQuery[str | None] = None,
    ) -> InstanceList:
        """Filter by status, definition or business key; keyset pagination with ``cursor``."""
        return await instances.list(
            status=status, definition=definition, business_key=business_key, limit=limit, cursor=cursor
        )

    @get("/{instance_id:str}", guards=[READ], summary="An instance")
    async def get_instance(
        self, instance_id: FromPath[str], instances: NamedDependency[InstanceService]
    ) -> InstanceView:
        """Status, context data, active steps and incidents."""
        return await instances.get(instance_id)

    @get("/{instance_id:str}/history", guards=[READ], summary="Every step attempt")
    async def history(
        self, instance_id: FromPath[str], instances: NamedDependency[InstanceService]
    ) -> HistoryView:
        """Every machine step attempt (times, worker, outcome, error) and every step event."""
        return await instances.history(instance_id)

    @get("/{instance_id:str}/graph", guards=[READ], summary="The instance's graph with its state")
    async def graph(
        self,
        instance_id: FromPath[str],
        instances: NamedDependency[InstanceService],
        format: Annotated[str, QueryParameter(name="format", pattern="^mermaid$")] = "mermaid",
    ) -> GraphView:
        """Mermaid, with completed, active and failed steps marked."""
        del format
        return await instances.graph(instance_id)

    @post("/{instance_id:str}/cancel", guards=[WRITE], status_code=HTTP_200_OK, summary="Cancel an instance")
    async def cancel(
        self,
        instance_id: FromPath[str],
        data: JSONBody[CancelInstance],
        instances: NamedDependency[InstanceService],
    ) -> InstanceView:
        """Cancel: open tasks and timers are withdrawn, late results dropped."""
        return await instances.cancel(instance_id, reason=data.reason)

    @post("/{instance_id:str}/retry", guards=[WRITE], status_code=HTTP_200_OK, summary="Retry the incidents")
    async def retry(
        self,
        instance_id: FromPath[str],
        data: JSONBody[RetryInstance],
        instances: NamedDependency[InstanceService],
    ) -> InstanceView:
        """Retry the open incidents: a failed step runs again as a new attempt."""
        return await instances.retry(instance_id, data=data.data)

    @post(
        "/{instance_id:str}/signals/{name:str}",
        guards=[WRITE],
        status_code=HTTP_200_OK,
        summary="Send a signal",
    )
    async def signal(
        self,
        instance_id: FromPath[str],
        name: FromPath[str],
        data: JSONBody[SendSignal],
        instances: NamedDependency[InstanceService],
    ) -> InstanceView:
        """Deliver a signal; steps waiting for it continue (or it waits for one that will)."""
        return await instances.signal(instance_id, name, data=data.data)
