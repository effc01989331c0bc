"""The client SDK: definitions (registry), instances (orchestrator) and tasks (inbox) over HTTP.

```python
async with WorkflowClient(token=token) as client:            # dev ports 8001/8002/8003 by default
    await client.register(definition)                        # a WorkflowDefinition, a dict, or a file
    instance = await client.start("expense-approval", input={"amount": 120})
    instance = await client.wait(instance["id"], until={"waiting", "completed"})
    task = (await client.list_tasks(instance_id=instance["id"]))["items"][0]
    await client.claim(task["id"])
    await client.complete(task["id"], {"approved": True})

with SyncWorkflowClient.from_env() as client:                # WF_REGISTRY_URL, ..., WF_TOKEN
    client.get_instance(instance_id)
```

Responses are the services' JSON documents as dicts (their shapes are in each service's OpenAPI at
``/schema/openapi.json``). Every failure raises a :class:`~wf_client.errors.WorkflowClientError`
subclass built from the problem details (``NotFound``, ``Conflict``, ``ValidationFailed`` with
``.errors``, ...); a service that cannot be reached raises ``Unavailable``.

Both clients share one description of every call (:class:`_Calls`), so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias
from urllib.parse import quote

import httpx

from wf_client.errors import Unavailable, error_from_response

__all__ = [
    "DEFAULT_INBOX_URL",
    "DEFAULT_ORCHESTRATOR_URL",
    "DEFAULT_REGISTRY_URL",
    "END_STATUSES",
    "DefinitionSource",
    "SyncWorkflowClient",
    "WorkflowClient",
    "definition_body",
]

DEFAULT_REGISTRY_URL = "http://127.0.0.1:8001"
DEFAULT_ORCHESTRATOR_URL = "http://127.0.0.1:8002"
DEFAULT_INBOX_URL = "http://127.0.0.1:8003"
END_STATUSES = frozenset({"completed", "failed", "cancelled"})
"""Statuses an instance does not leave on its own."""

if TYPE_CHECKING:  # importing the domain (CEL, the engine) costs a CLI call ~0.3 s: only when used
    from workflow_core.definition import WorkflowDefinition

Service = Literal["registry", "orchestrator", "inbox"]
DefinitionSource: TypeAlias = "WorkflowDefinition | Mapping[str, Any] | Path | str"
"""A definition to register: an object, its wire form, or a ``.yaml`` / ``.yml`` / ``.json`` file."""


def definition_body(definition: DefinitionSource, /) -> tuple[bytes, str]:
    """The request body and content type that register ``definition``.

    A ``str`` or ``Path`` is a file: YAML (``.yaml``, ``.yml``) is sent as ``application/yaml`` for
    the registry to parse (its errors then name YAML lines); anything else is sent as JSON.
    """
    if isinstance(definition, Mapping):
        return json.dumps(dict(definition)).encode(), "application/json"
    if not isinstance(definition, str | Path):  # a WorkflowDefinition
        return json.dumps(definition.to_wire()).encode(), "application/json"
    path = Path(definition)
    data = path.read_bytes()
    if path.suffix.lower() in {".yaml", ".yml"}:
        return data, "application/yaml"
    if path.suffix.lower() == ".json" or data.lstrip().startswith(b"{"):
        return data, "application/json"
    return data, "application/yaml"


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class _Call:
    service: Service
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict[str, Any])
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict[str, str])


class _Calls:
    """Every call of the API as data: (service, method, path, params, body)."""

    # --- registry
    @staticmethod
    def register(definition: DefinitionSource, *, validate_only: bool = False) -> _Call:
        body, content_type = definition_body(definition)
        path = "/v1/definitions/validate" if validate_only else "/v1/definitions"
        return _Call("registry", "POST", path, content=body, headers={"Content-Type": content_type})

    @staticmethod
    def list_definitions() -> _Call:
        return _Call("registry", "GET", "/v1/definitions")

    @staticmethod
    def get_definition(name: str, version: str | None) -> _Call:
        if version is None:
            return _Call("registry", "GET", f"/v1/definitions/{_segment(name)}")
        return _Call("registry", "GET", f"/v1/definitions/{_segment(name)}/versions/{_segment(version)}")

    @staticmethod
    def list_versions(name: str) -> _Call:
        return _Call("registry", "GET", f"/v1/definitions/{_segment(name)}/versions")

    @staticmethod
    def definition_graph(name: str, version: str, fmt: str) -> _Call:
        return _Call(
            "registry",
            "GET",
            f"/v1/definitions/{_segment(name)}/versions/{_segment(version)}/graph",
            params={"format": fmt},
        )

    @staticmethod
    def deprecate(name: str, version: str) -> _Call:
        return _Call(
            "registry", "POST", f"/v1/definitions/{_segment(name)}/versions/{_segment(version)}/deprecate"
        )

    # --- orchestrator
    @staticmethod
    def start(
        definition: str,
        *,
        input: Mapping[str, Any] | None,
        version: str | None,
        business_key: str | None,
        idempotency_key: str | None,
    ) -> _Call:
        body = {"definition": definition, "input": dict(input or {})} | _params(
            version=version, business_key=business_key
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call("orchestrator", "POST", "/v1/instances", json=body, headers=headers)

    @staticmethod
    def get_instance(instance_id: str) -> _Call:
        return _Call("orchestrator", "GET", f"/v1/instances/{_segment(instance_id)}")

    @staticmethod
    def list_instances(
        status: str | None,
        definition: str | None,
        business_key: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Call:
        params = _params(
            status=status, definition=definition, business_key=business_key, limit=limit, cursor=cursor
        )
        return _Call("orchestrator", "GET", "/v1/instances", params=params)

    @staticmethod
    def instance_sub(instance_id: str, what: str, method: str = "GET", body: Any = None) -> _Call:
        return _Call("orchestrator", method, f"/v1/instances/{_segment(instance_id)}/{what}", json=body)

    # --- inbox
    @staticmethod
    def list_tasks(filters: Mapping[str, Any]) -> _Call:
        return _Call("inbox", "GET", "/v1/tasks", params=_params(**filters))

    @staticmethod
    def task(task_id: str, action: str | None = None, body: Any = None) -> _Call:
        path = f"/v1/tasks/{_segment(task_id)}" + (f"/{action}" if action else "")
        return _Call("inbox", "POST" if action else "GET", path, json=body)


class _Base:
    def __init__(
        self,
        *,
        registry_url: str | None = None,
        orchestrator_url: str | None = None,
        inbox_url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.urls: dict[Service, str] = {
            "registry": (registry_url or DEFAULT_REGISTRY_URL).rstrip("/"),
            "orchestrator": (orchestrator_url or DEFAULT_ORCHESTRATOR_URL).rstrip("/"),
            "inbox": (inbox_url or DEFAULT_INBOX_URL).rstrip("/"),
        }
        self.token = token
        self.timeout = timeout

    @classmethod
    def _env(cls, env: Mapping[str, str] | None) -> dict[str, Any]:
        source = os.environ if env is None else env
        return {
            "registry_url": source.get("WF_REGISTRY_URL") or None,
            "orchestrator_url": source.get("WF_ORCHESTRATOR_URL") or None,
            "inbox_url": source.get("WF_INBOX_URL") or None,
            "token": source.get("WF_TOKEN") or None,
        }

    def _request(self, call: _Call) -> tuple[str, str, dict[str, Any]]:
        headers = dict(call.headers)
        headers.setdefault("Accept", "application/json")
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs: dict[str, Any] = {"headers": headers, "params": call.params or None}
        if call.content is not None:
            kwargs["content"] = call.content
        elif call.json is not None or call.method == "POST":
            kwargs["json"] = call.json if call.json is not None else {}
        return call.method, self.urls[call.service] + call.path, kwargs

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    @staticmethod
    def _unreachable(method: str, url: str, exc: httpx.HTTPError) -> Unavailable:
        return Unavailable(f"cannot reach {url}: {exc or type(exc).__name__}", method=method, url=url)


class WorkflowClient(_Base):
    """The async client.

    Args:
        registry_url: definition-registry (``http://127.0.0.1:8001``).
        orchestrator_url: orchestrator (``http://127.0.0.1:8002``).
        inbox_url: task-inbox (``http://127.0.0.1:8003``).
        token: The bearer token (a JWT whose ``tenant`` claim selects the tenant).
        timeout: Seconds per request.
        transport: An httpx transport (tests: ``httpx.ASGITransport``, ``httpx.MockTransport``).
    """

    def __init__(
        self,
        *,
        registry_url: str | None = None,
        orchestrator_url: str | None = None,
        inbox_url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            registry_url=registry_url,
            orchestrator_url=orchestrator_url,
            inbox_url=inbox_url,
            token=token,
            timeout=timeout,
        )
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> WorkflowClient:
        """URLs and token from ``WF_REGISTRY_URL``, ``WF_ORCHESTRATOR_URL``, ``WF_INBOX_URL``, ``WF_TOKEN``
        (``overrides`` win)."""
        return cls(**(cls._env(env) | {k: v for k, v in overrides.items() if v is not None}))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        method, url, kwargs = self._request(call)
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(method, url, exc) from exc
        return self._result(response)

    # ------------------------------------------------------------------ definitions

    async def register(self, definition: DefinitionSource, /) -> dict[str, Any]:
        """Register a definition version (idempotent for identical content; 409 for other content)."""
        return await self._send(_Calls.register(definition))

    async def validate(self, definition: DefinitionSource, /) -> dict[str, Any]:
        """Validate without storing (raises ``ValidationFailed`` listing every problem)."""
        return await self._send(_Calls.register(definition, validate_only=True))

    async def list_definitions(self) -> Any:
        """The latest version of each definition."""
        return await self._send(_Calls.list_definitions())

    async def get_definition(self, name: str, /, *, version: str | None = None) -> dict[str, Any]:
        """One version (the latest non-deprecated one by default) with its wire form."""
        return await self._send(_Calls.get_definition(name, version))

    async def list_versions(self, name: str, /) -> Any:
        """Every version of a definition, newest first."""
        return await self._send(_Calls.list_versions(name))

    async def definition_graph(self, name: str, version: str, /, *, format: str = "mermaid") -> Any:
        """The version's graph (``mermaid`` or ``json``)."""
        return await self._send(_Calls.definition_graph(name, version, format))

    async def deprecate(self, name: str, version: str, /) -> Any:
        """Deprecate a version (it stays runnable by name and version)."""
        return await self._send(_Calls.deprecate(name, version))

    # ------------------------------------------------------------------ instances

    async def start(
        self,
        definition: str,
        /,
        *,
        input: Mapping[str, Any] | None = None,
        version: str | None = None,
        business_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start an instance (the latest version unless ``version``); same idempotency key, same instance."""
        return await self._send(
            _Calls.start(
                definition,
                input=input,
                version=version,
                business_key=business_key,
                idempotency_key=idempotency_key,
            )
        )

    async def get_instance(self, instance_id: str, /) -> dict[str, Any]:
        """Status, context data, active steps and incidents."""
        return await self._send(_Calls.get_instance(instance_id))

    async def list_instances(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        business_key: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of instances, newest first: ``{items, next_cursor}``."""
        return await self._send(_Calls.list_instances(status, definition, business_key, limit, cursor))

    async def history(self, instance_id: str, /) -> dict[str, Any]:
        """Every step attempt and step event of an instance."""
        return await self._send(_Calls.instance_sub(instance_id, "history"))

    async def instance_graph(self, instance_id: str, /) -> dict[str, Any]:
        """The instance's graph as Mermaid, with its state marked."""
        return await self._send(_Calls.instance_sub(instance_id, "graph"))

    async def cancel(self, instance_id: str, /, *, reason: str = "") -> dict[str, Any]:
        """Cancel an instance."""
        return await self._send(_Calls.instance_sub(instance_id, "cancel", "POST", {"reason": reason}))

    async def retry(self, instance_id: str, /, *, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Retry the instance's incidents (optionally fixing its data first)."""
        return await self._send(_Calls.instance_sub(instance_id, "retry", "POST", {"data": dict(data or {})}))

    async def signal(
        self, instance_id: str, name: str, /, *, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a signal to an instance."""
        return await self._send(
            _Calls.instance_sub(instance_id, f"signals/{_segment(name)}", "POST", {"data": dict(data or {})})
        )

    async def wait(
        self,
        instance_id: str,
        /,
        *,
        until: Iterable[str] = END_STATUSES,
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> dict[str, Any]:
        """Poll the instance until its status is one of ``until``.

        Raises:
            TimeoutError: not there within ``timeout`` seconds.
        """
        wanted = set(until)
        deadline = time.monotonic() + timeout
        while True:
            instance = await self.get_instance(instance_id)
            if instance.get("status") in wanted:
                return instance
            if time.monotonic() >= deadline:
                raise TimeoutError(f"instance {instance_id} is {instance.get('status')} after {timeout}s")
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ tasks

    async def list_tasks(self, **filters: Any) -> dict[str, Any]:
        """Tasks the caller may act on: ``status, assignee ('me'), candidate_group, definition,
        instance_id, due_before, priority, q, sort, cursor, limit``. Returns ``{items, next_cursor}``."""
        return await self._send(_Calls.list_tasks(filters))

    async def get_task(self, task_id: str, /) -> dict[str, Any]:
        """One task with its form schema."""
        return await self._send(_Calls.task(task_id))

    async def claim(self, task_id: str, /) -> dict[str, Any]:
        """Claim a task (409 when someone else has it)."""
        return await self._send(_Calls.task(task_id, "claim"))

    async def unclaim(self, task_id: str, /) -> dict[str, Any]:
        """Give a claimed task back."""
        return await self._send(_Calls.task(task_id, "unclaim"))

    async def assign(self, task_id: str, user: str | None, /) -> dict[str, Any]:
        """Assign a task to ``user`` (``None`` releases it)."""
        return await self._send(_Calls.task(task_id, "assign", {"user": user}))

    async def complete(
        self, task_id: str, data: Mapping[str, Any], /, *, comment: str | None = None
    ) -> dict[str, Any]:
        """Complete a task with form data (``ValidationFailed`` lists every form error)."""
        body: dict[str, Any] = {"data": dict(data)} | ({"comment": comment} if comment is not None else {})
        return await self._send(_Calls.task(task_id, "complete", body))


class SyncWorkflowClient(_Base):
    """The blocking client: the same methods as :class:`WorkflowClient`, without ``await``."""

    def __init__(
        self,
        *,
        registry_url: str | None = None,
        orchestrator_url: str | None = None,
        inbox_url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            registry_url=registry_url,
            orchestrator_url=orchestrator_url,
            inbox_url=inbox_url,
            token=token,
            timeout=timeout,
        )
        self._http = httpx.Client(timeout=timeout, transport=transport)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> SyncWorkflowClient:
        """URLs and token from ``WF_REGISTRY_URL``, ``WF_ORCHESTRATOR_URL``, ``WF_INBOX_URL``, ``WF_TOKEN``
        (``overrides`` win)."""
        return cls(**(cls._env(env) | {k: v for k, v in overrides.items() if v is not None}))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, call: _Call) -> Any:
        method, url, kwargs = self._request(call)
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(method, url, exc) from exc
        return self._result(response)

    def register(self, definition: DefinitionSource, /) -> dict[str, Any]:
        """Register a definition version."""
        return self._send(_Calls.register(definition))

    def validate(self, definition: DefinitionSource, /) -> dict[str, Any]:
        """Validate without storing."""
        return self._send(_Calls.register(definition, validate_only=True))

    def list_definitions(self) -> Any:
        """The latest version of each definition."""
        return self._send(_Calls.list_definitions())

    def get_definition(self, name: str, /, *, version: str | None = None) -> dict[str, Any]:
        """One version with its wire form."""
        return self._send(_Calls.get_definition(name, version))

    def list_versions(self, name: str, /) -> Any:
        """Every version, newest first."""
        return self._send(_Calls.list_versions(name))

    def definition_graph(self, name: str, version: str, /, *, format: str = "mermaid") -> Any:
        """The version's graph."""
        return self._send(_Calls.definition_graph(name, version, format))

    def deprecate(self, name: str, version: str, /) -> Any:
        """Deprecate a version."""
        return self._send(_Calls.deprecate(name, version))

    def start(
        self,
        definition: str,
        /,
        *,
        input: Mapping[str, Any] | None = None,
        version: str | None = None,
        business_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start an instance."""
        return self._send(
            _Calls.start(
                definition,
                input=input,
                version=version,
                business_key=business_key,
                idempotency_key=idempotency_key,
            )
        )

    def get_instance(self, instance_id: str, /) -> dict[str, Any]:
        """An instance."""
        return self._send(_Calls.get_instance(instance_id))

    def list_instances(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        business_key: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page of instances."""
        return self._send(_Calls.list_instances(status, definition, business_key, limit, cursor))

    def history(self, instance_id: str, /) -> dict[str, Any]:
        """Every step attempt and step event."""
        return self._send(_Calls.instance_sub(instance_id, "history"))

    def instance_graph(self, instance_id: str, /) -> dict[str, Any]:
        """The instance's graph as Mermaid."""
        return self._send(_Calls.instance_sub(instance_id, "graph"))

    def cancel(self, instance_id: str, /, *, reason: str = "") -> dict[str, Any]:
        """Cancel an instance."""
        return self._send(_Calls.instance_sub(instance_id, "cancel", "POST", {"reason": reason}))

    def retry(self, instance_id: str, /, *, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Retry the incidents."""
        return self._send(_Calls.instance_sub(instance_id, "retry", "POST", {"data": dict(data or {})}))

    def signal(
        self, instance_id: str, name: str, /, *, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send a signal."""
        return self._send(
            _Calls.instance_sub(instance_id, f"signals/{_segment(name)}", "POST", {"data": dict(data or {})})
        )

    def wait(
        self,
        instance_id: str,
        /,
        *,
        until: Iterable[str] = END_STATUSES,
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> dict[str, Any]:
        """Poll until the status is one of ``until`` (``TimeoutError`` otherwise)."""
        wanted = set(until)
        deadline = time.monotonic() + timeout
        while True:
            instance = self.get_instance(instance_id)
            if instance.get("status") in wanted:
                return instance
            if time.monotonic() >= deadline:
                raise TimeoutError(f"instance {instance_id} is {instance.get('status')} after {timeout}s")
            time.sleep(interval)

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        """Tasks the caller may act on."""
        return self._send(_Calls.list_tasks(filters))

    def get_task(self, task_id: str, /) -> dict[str, Any]:
        """One task."""
        return self._send(_Calls.task(task_id))

    def claim(self, task_id: str, /) -> dict[str, Any]:
        """Claim a task."""
        return self._send(_Calls.task(task_id, "claim"))

    def unclaim(self, task_id: str, /) -> dict[str, Any]:
        """Give a task back."""
        return self._send(_Calls.task(task_id, "unclaim"))

    def assign(self, task_id: str, user: str | None, /) -> dict[str, Any]:
        """Assign a task."""
        return self._send(_Calls.task(task_id, "assign", {"user": user}))

    def complete(
        self, task_id: str, data: Mapping[str, Any], /, *, comment: str | None = None
    ) -> dict[str, Any]:
        """Complete a task with form data."""
        body: dict[str, Any] = {"data": dict(data)} | ({"comment": comment} if comment is not None else {})
        return self._send(_Calls.task(task_id, "complete", body))
