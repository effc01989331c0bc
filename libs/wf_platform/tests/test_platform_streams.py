"""Stream provisioning: create once, accept the same, refuse unsafe existing settings."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from wf_platform.streams import StreamSpec, UnsafeStreamError, ensure_stream


def _spec() -> StreamSpec:
    token = uuid.uuid4().hex[:8]
    return StreamSpec(name=f"TEST_{token.upper()}", subjects=(f"test.{token}.>",), max_age_seconds=3600)


async def test_create_then_verify_is_idempotent(nats_client: Any) -> None:
    js = nats_client.jetstream()
    spec = _spec()
    created = await ensure_stream(js, spec)
    again = await ensure_stream(js, spec)
    assert created.config.name == again.config.name == spec.name
    assert again.config.duplicate_window == spec.duplicate_window_seconds
    await js.delete_stream(spec.name)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"storage": StorageType.MEMORY}, "storage is memory"),
        ({"discard": DiscardPolicy.NEW}, "discard is new"),
        ({"duplicate_window": 5.0}, "duplicate window"),
        ({"max_age": 900.0}, "max age"),
        ({"subjects": ["elsewhere.>"]}, "not covered"),
    ],
)
async def test_unsafe_existing_stream_is_refused(
    nats_client: Any, change: dict[str, Any], problem: str
) -> None:
    js = nats_client.jetstream()
    spec = _spec()
    config = spec.to_config()
    for key, value in change.items():
        setattr(config, key, value)
    await js.add_stream(config)
    try:
        with pytest.raises(UnsafeStreamError, match=problem) as raised:
            await ensure_stream(js, spec)
        assert raised.value.stream == spec.name
    finally:
        await js.delete_stream(spec.name)


async def test_looser_settings_are_accepted(nats_client: Any) -> None:
    js = nats_client.jetstream()
    spec = _spec()
    config: StreamConfig = spec.to_config()
    config.max_age = 10 * 3600.0
    config.subjects = [spec.subjects[0].rsplit(".", 1)[0] + ".>", "more.things"]
    await js.add_stream(config)
    try:
        await ensure_stream(js, spec)
    finally:
        await js.delete_stream(spec.name)
