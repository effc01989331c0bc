"""Typed errors from problem details, and requests as the services expect them (no servers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from wf_client import (
    Conflict,
    Forbidden,
    NotFound,
    SyncWorkflowClient,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    WorkflowClient,
    WorkflowClientError,
)


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {"type": f"urn:wf:problem:{code}", "title": code.replace("_", " "), "status": status, "code": code}
    return httpx.Response(status, json=body | extra, headers={"Content-Type": "application/problem+json"})


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "conflict", Conflict),
        (503, "unavailable", Unavailable),
        (500, "internal", Unavailable),
        (418, "teapot", WorkflowClientError),
    ],
)
def test_each_status_has_its_error(status: int, code: str, kind: type[WorkflowClientError]) -> None:
    transport = httpx.MockTransport(lambda request: problem(status, code, detail="nope"))
    with SyncWorkflowClient(transport=transport, token="t") as client, pytest.raises(kind) as caught:
        client.get_instance("i-1")
    assert type(caught.value) is kind or kind is WorkflowClientError
    assert caught.value.status == status and caught.value.code == code and caught.value.detail == "nope"


async def test_validation_errors_carry_every_field_error(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return problem(
            422,
            "validation_failed",
            detail="2 problems",
            errors=[
                {"path": "steps.a.step_type", "message": "required"},
                {"path": "edges[0]", "message": "x"},
            ],
        )

    definition = tmp_path / "d.yaml"
    definition.write_text("name: d\n")
    async with WorkflowClient(transport=httpx.MockTransport(handler), token="tok") as client:
        with pytest.raises(ValidationFailed) as caught:
            await client.register(definition)
    assert caught.value.errors == [
        {"path": "steps.a.step_type", "message": "required"},
        {"path": "edges[0]", "message": "x"},
    ]
    assert "steps.a.step_type: required" in str(caught.value)
    (request,) = seen
    assert request.headers["Content-Type"] == "application/yaml" and request.content == b"name: d\n"
    assert request.headers["Authorization"] == "Bearer tok"
    assert str(request.url) == "http://127.0.0.1:8001/v1/definitions"


def test_start_sends_the_body_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "i-1", "status": "running"})

    client = SyncWorkflowClient.from_env(
        {"WF_ORCHESTRATOR_URL": "http://orch:9/", "WF_TOKEN": "abc"}, transport=httpx.MockTransport(handler)
    )
    with client:
        assert client.start("order", input={"a": 1}, idempotency_key="k-1")["id"] == "i-1"
    (request,) = seen
    assert str(request.url) == "http://orch:9/v1/instances"
    assert json.loads(request.content) == {"definition": "order", "input": {"a": 1}}
    assert request.headers["Idempotency-Key"] == "k-1" and request.headers["Authorization"] == "Bearer abc"


def test_an_unreachable_service_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        SyncWorkflowClient(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(Unavailable) as caught,
    ):
        client.list_tasks(status="open")
    assert caught.value.status is None and "cannot reach" in caught.value.detail
