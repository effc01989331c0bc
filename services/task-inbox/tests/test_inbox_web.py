"""The web inbox over HTTP (no browser): sign-in, CSRF, list, task page, form errors, completion."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from task_inbox import create_app
from task_inbox.webforms import build_fields, errors_by_pointer, parse_form
from wf_platform.problems import FieldError
from wf_platform.testing import asgi_client, in_own_task, unique_tenant

from .conftest import ADMIN, FORM, Harness

CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def sign_in(
    harness: Harness, *, user: str = "ann", groups: str = "finance", roles: tuple[str, ...] = ("tasks:work",)
) -> None:
    page = await harness.api.get("/login")
    form: dict[str, Any] = {
        "_csrf_token": csrf_of(page.text),
        "tenant": harness.tenant,
        "user": user,
        "groups": groups,
        "roles": list(roles),
        "next": "/",
    }
    response = await harness.api.post("/login", data=form)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "wf_inbox_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


async def test_sign_in_list_and_complete_in_the_web_inbox(harness: Harness) -> None:
    overdue_id = await harness.seed(title="Late one", due_at=datetime.now(UTC) - timedelta(hours=2))
    task_id = await harness.seed(title="Approve the trip", description="Paris, 3 days")
    await harness.seed(title="Not for me", candidate_groups=["sales"])

    first = await harness.api.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=%2F"
    login_page = await harness.api.get("/login")
    assert login_page.status_code == 200 and "wf_inbox_csrf" in harness.api.cookies
    forged = await harness.api.post("/login", data={"tenant": harness.tenant, "user": "ann"})
    assert forged.status_code == 403  # no CSRF token
    await sign_in(harness)

    listing = await harness.api.get("/")
    assert listing.status_code == 200
    assert "Approve the trip" in listing.text and "Late one" in listing.text
    assert "Not for me" not in listing.text
    assert re.search(rf'data-task-id="{overdue_id}"', listing.text)
    assert "overdue" in listing.text
    for name in (
        "status",
        "mine",
        "group",
        "definition",
        "instance",
        "due_after",
        "due_before",
        "priority_min",
        "q",
        "sort",
    ):
        assert f'<label for="{name}"' in listing.text, name
    filtered = await harness.api.get("/", params={"q": "trip"})
    assert "Approve the trip" in filtered.text and "Late one" not in filtered.text
    # A priority no task can have (or no database integer can hold) is no filter, not a 500.
    for odd in ("1" + "0" * 30, "-5", "101", "high"):
        unfiltered = await harness.api.get("/", params={"priority_min": odd})
        assert unfiltered.status_code == 200, odd
        assert "Approve the trip" in unfiltered.text, odd

    page = await harness.api.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    for field_id in (
        "f-approved",
        "f-amount",
        "f-reason",
        "f-category",
        "f-paid-on",
        "f-address-city",
        "f-address-zip",
    ):
        assert f'<label for="{field_id}"' in page.text, field_id
        assert f'id="{field_id}"' in page.text
    assert "<legend>Address" in page.text and "<textarea" in page.text and 'type="date"' in page.text
    assert 'data-testid="graph-unavailable"' in page.text

    claim = await harness.api.post(f"/tasks/{task_id}/claim", data={"_csrf_token": csrf_of(page.text)})
    assert claim.status_code == 303
    page = await harness.api.get(f"/tasks/{task_id}")
    assert "Unclaim" in page.text and ">claimed<" in page.text

    token = csrf_of(page.text)
    invalid = await harness.api.post(
        f"/tasks/{task_id}/complete",
        data={"_csrf_token": token, "amount": "5000", "category": "travel", "address.city": "P"},
    )
    assert invalid.status_code == 422
    amount_field = re.search(r'data-field="amount">(.*?)</div>', invalid.text, re.S)
    assert amount_field and "must be at most 1000" in amount_field.group(1)
    assert 'value="5000"' in amount_field.group(1)  # what was typed is shown back
    approved_field = re.search(r'data-field="approved">(.*?)</div>', invalid.text, re.S)
    assert approved_field and "is required" in approved_field.group(1)
    city = re.search(r'data-field="address.city">(.*?)</div>', invalid.text, re.S)
    assert city and "must be at least 2 characters long" in city.group(1)

    no_csrf = await harness.api.post(f"/tasks/{task_id}/complete", data={"approved": "true", "amount": "10"})
    assert no_csrf.status_code == 403
    done = await harness.api.post(
        f"/tasks/{task_id}/complete",
        data={
            "_csrf_token": token,
            "approved": "true",
            "amount": "120",
            "category": "travel",
            "paid_on": "2025-03-01",
            "address.city": "Paris",
            "_comment": "ok",
        },
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith("/?done=")
    task = (await harness.api.get(f"/v1/tasks/{task_id}", headers=harness.headers(roles=ADMIN))).json()
    assert task["status"] == "completed" and task["completed_by"] == "ann" and task["comment"] == "ok"
    assert task["data"] == {
        "approved": True,
        "amount": 120,
        "category": "travel",
        "paid_on": "2025-03-01",
        "address": {"city": "Paris"},
    }
    after = await harness.api.get("/")
    assert "Approve the trip" not in after.text  # left the open list
    again = await harness.api.post(
        f"/tasks/{task_id}/complete", data={"_csrf_token": token, "approved": "true", "amount": "1"}
    )
    assert again.status_code == 409

    out = await harness.api.post("/logout", data={"_csrf_token": token})
    assert out.status_code == 303
    assert (await harness.api.get("/")).status_code == 303


async def test_proxy_header_sign_in_and_no_dev_login(harness: Harness) -> None:
    # A second app may not consume the same tenant's subjects (WF_TASKS is a work queue): it gets
    # a tenant of its own to consume, and this test's tasks are seeded directly.
    other = unique_tenant("proxy")
    settings = dataclasses.replace(
        harness.settings, dev_login=False, consumer_durable=f"test-inbox-{other}", consumer_tenant=other
    )
    app = create_app(settings)
    async with in_own_task(asgi_client(app)) as client:
        task_id = await harness.seed(title="Via the proxy")
        proxy = harness.headers(sub="pat")
        listing = await client.get("/", headers=proxy)
        assert listing.status_code == 200 and "Via the proxy" in listing.text
        assert "Sign out" not in listing.text  # the proxy owns that session
        assert (await client.get(f"/tasks/{task_id}", headers=proxy)).status_code == 200
        login = await client.get("/login")
        assert "single sign-on" in login.text and 'name="tenant"' not in login.text
        posted = await client.post(
            "/login", data={"_csrf_token": csrf_of(login.text) if CSRF.search(login.text) else "x"}
        )
        assert posted.status_code in (403, 404)
        no_roles = await client.get("/", headers=harness.headers(roles=["instances:read"]))
        assert no_roles.status_code == 403
        expired = await client.get("/", headers=harness.headers() | {"Authorization": "Bearer nonsense"})
        assert expired.status_code == 303
    await harness.js.delete_consumer("WF_TASKS", settings.consumer_durable)


async def test_other_tenants_task_page_is_404(harness: Harness) -> None:
    task_id = await harness.seed()
    stranger = harness.headers(tenant="zzz_other", roles=ADMIN)
    assert (await harness.api.get(f"/tasks/{task_id}", headers=stranger)).status_code == 404
    assert (await harness.api.get("/tasks/not-a-uuid", headers=stranger)).status_code == 404


def test_fields_from_schema_cover_the_kinds() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2, "title": "Full name"},
            "notes": {"type": "string"},
            "count": {"type": "integer", "minimum": 0, "maximum": 9},
            "ratio": {"type": "number"},
            "ok": {"type": "boolean", "default": True},
            "size": {"enum": [1, 2, 3]},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "nested": {
                "type": "object",
                "properties": {"deep": {"type": "object", "properties": {"x": {"type": "string"}}}},
            },
        },
        "required": ["name"],
    }
    fields = build_fields(schema, hints={"/notes": {"widget": "textarea", "help": "Anything"}})
    kinds = {f.name: f.kind for f in fields}
    assert kinds == {
        "name": "text",
        "notes": "textarea",
        "count": "integer",
        "ratio": "number",
        "ok": "boolean",
        "size": "select",
        "when": "datetime",
        "tags": "json",
        "nested": "fieldset",
    }
    by_name = {f.name: f for f in fields}
    assert by_name["name"].label == "Full name" and by_name["name"].required
    assert by_name["name"].attrs == {"minlength": "2"}
    assert by_name["count"].attrs == {"min": "0", "max": "9", "step": "1"}
    assert by_name["ok"].value == "true"
    assert by_name["notes"].help == "Anything"
    assert by_name["nested"].children[0].children[0].name == "nested.deep.x"

    data = parse_form(
        schema,
        {
            "name": " Ann ",
            "notes": "",
            "count": "3",
            "ratio": "2.5",
            "ok": "false",
            "size": "2",
            "when": "2025-01-02T03:04",
            "tags": '["a"]',
            "nested.deep.x": "y",
        },
    )
    assert data == {
        "name": "Ann",
        "count": 3,
        "ratio": 2.5,
        "ok": False,
        "size": 2,
        "when": "2025-01-02T03:04:00Z",
        "tags": ["a"],
        "nested": {"deep": {"x": "y"}},
    }
    assert parse_form(schema, {"count": "three"}) == {"count": "three"}  # the validator reports it

    errors = [FieldError(path="/count", message="must be an integer"), FieldError(path="", message="bad")]
    by_pointer, general = errors_by_pointer(errors, fields)
    assert by_pointer == {"/count": ["must be an integer"]} and general == ["bad"]
    assert FORM["required"] == ["approved", "amount"]
