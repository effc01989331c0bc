"""``definition.published`` goes through the outbox to NATS exactly once per registration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import nats
import pytest

from definition_registry import Settings, create_app
from wf_platform import get_platform
from wf_platform.bus import EventBus
from wf_platform.outbox import OutboxRelay
from wf_platform.testing import SigningKeys, asgi_client, bearer, stream_subject_counts, unique_tenant

MakeDef = Callable[..., dict[str, Any]]
ROLES = ["definitions:read", "definitions:write"]


class _KilledAfterPublishError(Exception):
    """Stands in for the process dying between the publish and the commit that marks the row sent."""


class _DiesAfterPublishing:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.published = 0

    async def publish(
        self, subject: str, payload: bytes, /, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.bus.publish(subject, payload, msg_id=msg_id, headers=headers)
        self.published += 1
        raise _KilledAfterPublishError


@pytest.fixture
async def js(nats_url: str) -> Any:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.drain()


async def _wait_for(js: Any, subject: str, count: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(100):
        counts = await stream_subject_counts(js, "WF_EVENTS", subject)
        if sum(counts.values()) >= count:
            break
        await asyncio.sleep(0.05)
    return counts


async def test_one_event_per_registration(
    settings: Settings, keys: SigningKeys, make_definition: MakeDef, js: Any
) -> None:
    tenant = unique_tenant()
    headers = bearer(keys.token(tenant=tenant, sub="author-7", roles=ROLES))
    subject = f"wf.events.{tenant}.definition.published"
    async with asgi_client(create_app(settings)) as client:
        assert (
            await client.post("/v1/definitions", json=make_definition("order", "1.0.0"), headers=headers)
        ).status_code == 201
        assert (
            await client.post("/v1/definitions", json=make_definition("order", "1.0.0"), headers=headers)
        ).status_code == 200
        assert (
            await client.post("/v1/definitions", json=make_definition("order", "1.1.0"), headers=headers)
        ).status_code == 201
        invalid = make_definition("order", "2.0.0")
        invalid["edges"] = [{"source": "nope", "target": "s0"}]
        assert (await client.post("/v1/definitions", json=invalid, headers=headers)).status_code == 422
        assert await _wait_for(js, subject, 2) == {subject: 2}
        await asyncio.sleep(0.3)
        assert await stream_subject_counts(js, "WF_EVENTS", subject) == {subject: 2}
        message = await js.get_last_msg("WF_EVENTS", subject)
        event = json.loads(message.data)
        assert event["tenant"] == tenant
        assert event["name"] == "order"
        assert event["version"] == "1.1.0"
        assert event["author"] == "author-7"
        assert event["digest"].startswith("sha256:")
        assert event["published_at"]
        assert message.headers["Nats-Msg-Id"] == f"definition.published:{tenant}:order:1.1.0"
        assert message.headers["traceparent"].startswith("00-")
        metrics = (await client.get("/metrics")).text
        assert "wf_outbox_published_messages_total" in metrics


async def test_relay_killed_between_publish_and_marking_sent_publishes_once(
    settings: Settings, keys: SigningKeys, make_definition: MakeDef, js: Any
) -> None:
    tenant = unique_tenant()
    headers = bearer(keys.token(tenant=tenant, roles=ROLES))
    subject = f"wf.events.{tenant}.definition.published"
    app = create_app(settings)
    async with asgi_client(app) as client:
        platform = get_platform(app)
        await platform.relay.stop()  # the service's relay is "down"; rows stay pending
        assert (
            await client.post("/v1/definitions", json=make_definition("order"), headers=headers)
        ).status_code == 201
        dying = OutboxRelay(platform.engine, _DiesAfterPublishing(platform.bus))
        with pytest.raises(_KilledAfterPublishError):
            await dying.run_once()
        assert await _wait_for(js, subject, 1) == {subject: 1}
        pending, _ = await platform.relay.refresh_lag()
        assert pending >= 1  # the crash rolled back "sent"
        # The next relay (a restarted process, or another replica) publishes the row again...
        published, _ = await OutboxRelay(platform.engine, platform.bus).run_once()
        assert published >= 1
        # ...and JetStream drops the copy by its Nats-Msg-Id: one message for one registration.
        await asyncio.sleep(0.2)
        assert await stream_subject_counts(js, "WF_EVENTS", subject) == {subject: 1}
        assert await OutboxRelay(platform.engine, platform.bus).run_once() == (0, 0)
