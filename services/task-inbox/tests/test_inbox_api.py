"""Every route of /v1/tasks: visibility, claims, completion, assignment, errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from workflow_core.messages import TaskCompletedMessage

from .conftest import ADMIN, Harness

VALID = {"approved": True, "amount": 120}


async def test_visibility_follows_the_groups_of_each_token(harness: Harness) -> None:
    task_id = await harness.seed(candidate_groups=["finance"])
    in_group = harness.headers(sub="ann", groups=["finance"])
    outside = harness.headers(sub="bob", groups=["sales"])
    removed = harness.headers(sub="ann", groups=[])  # ann's next token no longer has the group

    assert (await harness.api.get(f"/v1/tasks/{task_id}", headers=in_group)).status_code == 200
    listed = (await harness.api.get("/v1/tasks", headers=in_group)).json()
    assert [t["id"] for t in listed["items"]] == [task_id]

    for headers in (outside, removed):
        assert (await harness.api.get(f"/v1/tasks/{task_id}", headers=headers)).status_code == 404
        assert (await harness.api.get("/v1/tasks", headers=headers)).json()["items"] == []
        claim = await harness.api.post(f"/v1/tasks/{task_id}/claim", headers=headers)
        assert claim.status_code == 404

    admin = harness.headers(sub="root", roles=ADMIN, groups=[])
    assert (await harness.api.get(f"/v1/tasks/{task_id}", headers=admin)).status_code == 200


async def test_candidate_users_and_assignee_see_their_tasks(harness: Harness) -> None:
    for_carl = await harness.seed(candidate_groups=[], candidate_users=["carl"])
    for_dora = await harness.seed(candidate_groups=[], assignee="dora")
    carl = harness.headers(sub="carl", groups=[])
    dora = harness.headers(sub="dora", groups=[])
    assert [t["id"] for t in (await harness.api.get("/v1/tasks", headers=carl)).json()["items"]] == [for_carl]
    body = (await harness.api.get("/v1/tasks", headers=dora)).json()
    assert [(t["id"], t["status"], t["assignee"]) for t in body["items"]] == [(for_dora, "claimed", "dora")]


async def test_another_tenant_gets_404_and_roles_are_checked(harness: Harness) -> None:
    task_id = await harness.seed()
    stranger = harness.headers(tenant="other_tenant_x", roles=ADMIN)
    assert (await harness.api.get(f"/v1/tasks/{task_id}", headers=stranger)).status_code == 404
    for route in ("claim", "unclaim"):
        assert (await harness.api.post(f"/v1/tasks/{task_id}/{route}", headers=stranger)).status_code == 404
    complete = await harness.api.post(f"/v1/tasks/{task_id}/complete", json={"data": VALID}, headers=stranger)
    assert complete.status_code == 404

    no_role = harness.headers(roles=["instances:read"])
    response = await harness.api.get("/v1/tasks", headers=no_role)
    assert response.status_code == 403
    assert response.json()["code"] == "missing_role"
    assert (await harness.api.get("/v1/tasks")).status_code == 401
    assert (await harness.api.get("/v1/tasks/not-a-uuid", headers=harness.headers())).status_code == 404


async def test_claim_unclaim_and_conflicts(harness: Harness) -> None:
    task_id = await harness.seed()
    ann = harness.headers(sub="ann")
    bob = harness.headers(sub="bob")

    claimed = await harness.api.post(f"/v1/tasks/{task_id}/claim", headers=ann)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["status"] == "claimed" and claimed.json()["assignee"] == "ann"
    assert claimed.headers["etag"] == '"2"'
    again = await harness.api.post(f"/v1/tasks/{task_id}/claim", headers=ann)
    assert again.status_code == 200  # one's own claim is idempotent

    taken = await harness.api.post(f"/v1/tasks/{task_id}/claim", headers=bob)
    assert taken.status_code == 409 and taken.json()["code"] == "task_claimed"
    assert (await harness.api.post(f"/v1/tasks/{task_id}/unclaim", headers=bob)).status_code == 409
    blocked = await harness.api.post(f"/v1/tasks/{task_id}/complete", json={"data": VALID}, headers=bob)
    assert blocked.status_code == 409 and blocked.json()["code"] == "task_claimed"

    stale = await harness.api.post(f"/v1/tasks/{task_id}/unclaim", headers={**ann, "If-Match": '"1"'})
    assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
    released = await harness.api.post(f"/v1/tasks/{task_id}/unclaim", headers={**ann, "If-Match": '"2"'})
    assert released.status_code == 200
    assert released.json()["status"] == "open" and released.json()["assignee"] is None
    not_claimed = await harness.api.post(f"/v1/tasks/{task_id}/unclaim", headers=ann)
    assert not_claimed.status_code == 409 and not_claimed.json()["code"] == "task_not_claimed"

    history = (await harness.api.get(f"/v1/tasks/{task_id}", headers=ann)).json()["history"]
    assert [(h["actor"], h["action"]) for h in history] == [
        ("system:orchestrator", "created"),
        ("ann", "claimed"),
        ("ann", "unclaimed"),
    ]


async def test_of_concurrent_claims_exactly_one_wins(harness: Harness) -> None:
    task_id = await harness.seed()
    users = [f"user-{i}" for i in range(6)]
    responses = await asyncio.gather(
        *(harness.api.post(f"/v1/tasks/{task_id}/claim", headers=harness.headers(sub=u)) for u in users)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 5, [r.text for r in responses]
    winner = next(u for u, r in zip(users, responses, strict=True) if r.status_code == 200)
    task = (await harness.api.get(f"/v1/tasks/{task_id}", headers=harness.headers())).json()
    assert task["assignee"] == winner and task["version"] == 2


async def test_complete_lists_every_form_error(harness: Harness) -> None:
    task_id = await harness.seed()
    response = await harness.api.post(
        f"/v1/tasks/{task_id}/complete",
        json={"data": {"amount": 5000, "category": "food", "paid_on": "yesterday", "address": {"city": "X"}}},
        headers=harness.headers(),
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_task_data"
    assert response.headers["content-type"].startswith("application/problem+json")
    paths = {e["path"]: e["message"] for e in body["errors"]}
    assert paths == {
        "/approved": "is required",
        "/amount": "must be at most 1000",
        "/category": 'must be one of: "travel", "office", "other"',
        "/paid_on": "must be a date (YYYY-MM-DD)",
        "/address/city": "must be at least 2 characters long",
    }
    task = (await harness.api.get(f"/v1/tasks/{task_id}", headers=harness.headers())).json()
    assert task["status"] == "open"  # nothing stored


async def test_complete_publishes_once_and_twice_is_409(harness: Harness) -> None:
    task_id = await harness.seed()
    ann = harness.headers(sub="ann")
    done = await harness.api.post(
        f"/v1/tasks/{task_id}/complete", json={"data": VALID, "comment": "fine"}, headers=ann
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed" and body["completed_by"] == "ann" and body["data"] == VALID
    assert [h["action"] for h in body["history"]] == ["created", "claimed", "completed"]

    twice = await harness.api.post(f"/v1/tasks/{task_id}/complete", json={"data": VALID}, headers=ann)
    assert twice.status_code == 409 and twice.json()["code"] == "task_already_completed"
    claim = await harness.api.post(f"/v1/tasks/{task_id}/claim", headers=ann)
    assert claim.status_code == 409

    subject = f"wf.tasks.{harness.tenant}.completed"
    message: Any = None
    for _ in range(100):
        try:
            message = await harness.js.get_last_msg("WF_TASKS", subject)
            break
        except Exception:
            await asyncio.sleep(0.1)
    assert message is not None, "the completion never reached the stream"
    completion = msgspec.json.decode(message.data, type=TaskCompletedMessage)
    assert completion.task_id == task_id and completion.tenant == harness.tenant
    assert completion.data == VALID and completion.user == "ann" and completion.comment == "fine"
    assert (message.headers or {}).get("Nats-Msg-Id") == f"task:{task_id}:completed"


async def test_concurrent_completions_publish_one_message(harness: Harness) -> None:
    task_id = await harness.seed()
    responses = await asyncio.gather(
        *(
            harness.api.post(
                f"/v1/tasks/{task_id}/complete", json={"data": VALID}, headers=harness.headers(sub=u)
            )
            for u in ("ann", "bob", "cyd")
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409]


async def test_assign_admin_and_delegation(harness: Harness) -> None:
    task_id = await harness.seed()
    admin = harness.headers(sub="boss", roles=ADMIN, groups=[])
    ann = harness.headers(sub="ann")
    bob = harness.headers(sub="bob")

    refused = await harness.api.post(f"/v1/tasks/{task_id}/assign", json={"user": "ann"}, headers=bob)
    assert refused.status_code == 403 and refused.json()["code"] == "not_assignee"
    assigned = await harness.api.post(f"/v1/tasks/{task_id}/assign", json={"user": "ann"}, headers=admin)
    assert assigned.status_code == 200 and assigned.json()["assignee"] == "ann"
    delegated = await harness.api.post(f"/v1/tasks/{task_id}/assign", json={"user": "bob"}, headers=ann)
    assert delegated.status_code == 200 and delegated.json()["assignee"] == "bob"
    released = await harness.api.post(f"/v1/tasks/{task_id}/assign", json={"user": None}, headers=admin)
    assert released.json()["status"] == "open"
    bad = await harness.api.post(f"/v1/tasks/{task_id}/assign", json={"who": "x"}, headers=admin)
    assert bad.status_code == 400


async def test_filters_and_sorts(harness: Harness) -> None:
    now = datetime.now(UTC)
    a = await harness.seed(title="Approve travel invoice", priority=80, due_at=now + timedelta(days=1))
    b = await harness.seed(
        title="Check office chairs",
        description="The invoice from Chairs Inc",
        priority=20,
        due_at=now - timedelta(days=1),
        candidate_groups=["finance", "facilities"],
    )
    c = await harness.seed(title="Review contract", priority=50, definition=_ref("contracts"))
    await harness.api.post(f"/v1/tasks/{c}/claim", headers=harness.headers(sub="user-1"))
    h = harness.headers(sub="user-1", groups=["finance"])

    async def ids(**params: Any) -> list[str]:
        response = await harness.api.get("/v1/tasks", params=params, headers=h)
        assert response.status_code == 200, response.text
        return [t["id"] for t in response.json()["items"]]

    assert await ids(sort="due") == [b, a, c]  # no due date sorts last
    assert await ids(sort="-priority") == [a, c, b]
    assert await ids(sort="priority") == [b, c, a]
    assert await ids(sort="created") == [a, b, c]
    assert await ids(sort="-created") == [c, b, a]
    assert await ids(status="open", sort="created") == [a, b]
    assert await ids(status="claimed") == [c]
    assert await ids(assignee="me") == [c]
    assert await ids(assignee="none", sort="created") == [a, b]
    assert await ids(candidate_group="facilities") == [b]
    assert await ids(definition="contracts") == [c]
    instance = (await harness.api.get(f"/v1/tasks/{a}", headers=h)).json()["instance_id"]
    assert await ids(instance_id=instance) == [a]
    assert await ids(due_before=now.isoformat()) == [b]
    assert await ids(due_after=now.isoformat()) == [a]
    assert await ids(priority=50) == [c]
    assert await ids(priority_min=50, sort="created") == [a, c]
    assert await ids(q="invoice", sort="created") == [a, b]
    assert await ids(q="INVO") == [b, a]
    assert await ids(q="chairs inc") == [b]
    assert await ids(q="&|!:*()") == [c, b, a]  # no words: no text filter, and no tsquery syntax error

    overdue = {t["id"]: t["overdue"] for t in (await harness.api.get("/v1/tasks", headers=h)).json()["items"]}
    assert overdue == {a: False, b: True, c: False}

    for params in ({"sort": "size"}, {"status": "done"}, {"cursor": "garbage"}):
        response = await harness.api.get("/v1/tasks", params=params, headers=h)
        assert response.status_code == 400, params


def _ref(name: str) -> Any:
    from workflow_core.messages import DefinitionRef

    return DefinitionRef(name=name, version="2.0.0")


async def test_keyset_pages_are_stable_while_tasks_arrive(harness: Harness) -> None:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    first = [await harness.seed(due_at=base + timedelta(minutes=i), title=f"t{i}") for i in range(0, 40, 2)]
    h = harness.headers()
    seen: list[str] = []
    cursor: str | None = None
    inserted = 0
    while True:
        params: dict[str, Any] = {"sort": "due", "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await harness.api.get("/v1/tasks", params=params, headers=h)).json()
        seen.extend(t["id"] for t in page["items"])
        # Concurrent arrivals, before and after the current position: those after it show up later,
        # those before it never shift what is still to come.
        await asyncio.gather(
            harness.seed(due_at=base + timedelta(minutes=2 * inserted + 1), title="late"),
            harness.seed(due_at=base - timedelta(days=1), title="early"),
        )
        inserted += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a task appeared twice"
    assert set(first) <= set(seen), "a task was skipped"
    due_cursor = (await harness.api.get("/v1/tasks", params={"sort": "due", "limit": 1}, headers=h)).json()
    wrong_sort = await harness.api.get(
        "/v1/tasks", params={"sort": "-created", "cursor": due_cursor["next_cursor"]}, headers=h
    )
    assert wrong_sort.status_code == 400 and wrong_sort.json()["code"] == "invalid_cursor"


async def test_health_metrics_and_openapi(harness: Harness) -> None:
    assert (await harness.api.get("/health/live")).json() == {"status": "ok"}
    ready = await harness.api.get("/health/ready")
    assert ready.status_code == 200, ready.text
    await harness.seed()
    metrics = (await harness.api.get("/metrics")).text
    assert "wf_inbox_task_actions" in metrics
    schema = (await harness.api.get("/schema/openapi.json")).json()
    assert {"/v1/tasks", "/v1/tasks/{task_id}/complete", "/v1/tasks/{task_id}/assign"} <= set(schema["paths"])
    assert "/login" not in schema["paths"]
