"""RegistryClient.resolve: answers kept for cache_seconds, concurrent misses share one request."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from orchestrator.definitions import RegistryClient
from orchestrator.errors import RegistryUnavailableError


class _Registry:
    """A registry answering over httpx.MockTransport, counting requests; ``gate`` holds answers."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.status = 200

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        await self.gate.wait()
        if self.status != 200:
            return httpx.Response(self.status)
        body = {"name": "order", "version": "1.0.0", "digest": "d", "deprecated": False, "definition": {}}
        return httpx.Response(200, content=json.dumps(body).encode())

    def client(self, cache_seconds: float) -> RegistryClient:
        return RegistryClient(
            "http://registry", transport=httpx.MockTransport(self), cache_seconds=cache_seconds
        )


async def test_an_answer_is_reused_within_cache_seconds_and_asked_again_after() -> None:
    registry = _Registry()
    client = registry.client(cache_seconds=0.2)
    first = await client.resolve("t1", "order", None, token="a")
    again = await client.resolve("t1", "order", None, token="b")
    assert again is first and len(registry.requests) == 1
    await client.resolve("t2", "order", None, token="a")  # another tenant: its own entry
    assert len(registry.requests) == 2
    await asyncio.sleep(0.25)
    await client.resolve("t1", "order", None, token="a")
    assert len(registry.requests) == 3


async def test_without_a_cache_every_resolve_asks() -> None:
    registry = _Registry()
    client = registry.client(cache_seconds=0)
    for _ in range(3):
        await client.resolve("t1", "order", None, token="a")
    assert len(registry.requests) == 3


async def test_concurrent_misses_share_one_request() -> None:
    registry = _Registry()
    registry.gate.clear()
    client = registry.client(cache_seconds=5)
    waiting = [asyncio.create_task(client.resolve("t1", "order", None, token="a")) for _ in range(20)]
    await asyncio.sleep(0.05)
    registry.gate.set()
    answers = await asyncio.gather(*waiting)
    assert len(registry.requests) == 1
    assert all(answer is answers[0] for answer in answers)


async def test_a_failure_reaches_every_waiter_and_is_not_kept() -> None:
    registry = _Registry()
    registry.gate.clear()
    registry.status = 500
    client = registry.client(cache_seconds=5)
    waiting = [asyncio.create_task(client.resolve("t1", "order", None, token="a")) for _ in range(5)]
    await asyncio.sleep(0.05)
    registry.gate.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, RegistryUnavailableError) for o in outcomes)
    assert len(registry.requests) == 1
    registry.status = 200
    await client.resolve("t1", "order", None, token="a")  # asked again, not answered from memory
    assert len(registry.requests) == 2


async def test_the_first_caller_going_away_does_not_cancel_the_others() -> None:
    registry = _Registry()
    registry.gate.clear()
    client = registry.client(cache_seconds=5)
    leader = asyncio.create_task(client.resolve("t1", "order", None, token="a"))
    await asyncio.sleep(0.02)
    follower = asyncio.create_task(client.resolve("t1", "order", None, token="b"))
    await asyncio.sleep(0.02)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    registry.gate.set()
    answer = await follower
    assert answer.name == "order" and len(registry.requests) == 1
