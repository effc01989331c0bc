"""The load driver's HTTP client (``bench/lean_http.py``): what it sends, how it frames responses,
that it keeps connections alive within its limit, and that a broken exchange fails only its own
request. Against a scripted TCP server (exact bytes) and against uvicorn serving Litestar (what the
driver really talks to)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody

from wf_platform.testing import serve
from wf_stack import free_port

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Handles one request on a connection; False closes the connection."""


@pytest.fixture(scope="module")
def lean(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("lean_http")


class ScriptedServer:
    """A TCP server on 127.0.0.1 that reads whole requests and answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self._handlers: set[asyncio.Task[None]] = set()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self.reply(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def ok(body: bytes, *, status: str = "201 Created") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        len(body),
        body,
    )


async def test_the_request_is_sent_as_built_and_a_response_in_pieces_is_reassembled(lean: ModuleType) -> None:
    async def in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await server.read_request(reader)
        response = ok(b'{"id":"i-1"}')
        for piece in (response[:7], response[7:40], response[40:-3], response[-3:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        return True

    async with ScriptedServer(in_pieces) as server:
        client = lean.LeanHTTPClient(server.url, connections=2)
        request = client.request_bytes(
            "POST",
            "/v1/instances",
            headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
            body=b'{"a":1}',
        )
        response = await client.send(request)
        await client.close()

    assert (response.status, response.body) == (201, b'{"id":"i-1"}')
    port = server.url.rsplit(":", 1)[1]
    assert server.requests == [
        b"POST /v1/instances HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nAuthorization: Bearer t\r\n"
        b'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}' % port.encode()
    ]


async def test_connections_are_kept_alive_and_never_more_than_the_limit(lean: ModuleType) -> None:
    async def slow_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request = await server.read_request(reader)
        await asyncio.sleep(0.02)
        writer.write(ok(request.rsplit(b"\r\n\r\n", 1)[1]))
        return True

    async with ScriptedServer(slow_ok) as server:
        client = lean.LeanHTTPClient(server.url, connections=3)
        for index in range(5):  # one after another: one connection
            body = b"%d" % index
            assert (await client.send(client.request_bytes("POST", "/", headers={}, body=body))).body == body
        assert server.connections == 1
        bodies = [b"c%d" % i for i in range(12)]
        responses = await asyncio.gather(
            *(client.send(client.request_bytes("POST", "/", headers={}, body=body)) for body in bodies)
        )
        await client.close()

    assert [r.body for r in responses] == bodies  # each request got its own response
    assert server.connections == 3


async def test_a_response_without_length_or_a_closed_connection_fails_only_its_request(
    lean: ModuleType,
) -> None:
    answers = iter(["chunked", "close", "ok"])

    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await server.read_request(reader)
        answer = next(answers)
        if answer == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            await writer.drain()
            return True
        if answer == "close":
            return False  # closed without an answer
        writer.write(ok(b"{}", status="200 OK"))
        return True

    async with ScriptedServer(scripted) as server:
        client = lean.LeanHTTPClient(server.url, connections=1, timeout=2)
        request = client.request_bytes("GET", "/", headers={})
        with pytest.raises(lean.LeanHTTPError, match="without Content-Length"):
            await client.send(request)
        with pytest.raises(lean.LeanHTTPError, match="connection closed"):
            await client.send(request)
        response = await client.send(request)  # a new connection, unaffected
        await client.close()

    assert (response.status, response.body) == (200, b"{}")
    assert server.connections == 3


async def test_a_response_that_never_comes_times_out(lean: ModuleType) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await server.read_request(reader)
        await asyncio.sleep(5)
        return False

    async with ScriptedServer(silent) as server:
        client = lean.LeanHTTPClient(server.url, connections=1, timeout=0.2)
        with pytest.raises(TimeoutError):
            await client.send(client.request_bytes("GET", "/", headers={}))
        await client.close()


def litestar_app() -> Litestar:
    @post("/v1/instances", status_code=201)
    async def start(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        return {"id": "i-7", "definition": data["definition"]}

    @get("/items")
    async def items() -> list[int]:
        return list(range(2000))  # larger than one read

    return Litestar([start, items])


async def test_it_speaks_to_uvicorn_serving_litestar(lean: ModuleType) -> None:
    async with serve(litestar_app(), free_port(), lifespan="off") as url:
        client = lean.LeanHTTPClient(url, connections=2)
        start = client.request_bytes(
            "POST", "/v1/instances", headers={"Content-Type": "application/json"}, body=b'{"definition":"w"}'
        )
        first, second = await client.send(start), await client.send(start)
        items = await client.send(client.request_bytes("GET", "/items", headers={}))
        missing = await client.send(client.request_bytes("GET", "/nowhere", headers={}))
        await client.close()

    assert (first.status, first.body) == (201, b'{"id":"i-7","definition":"w"}')
    assert second.body == first.body
    assert items.status == 200
    assert items.body == ("[" + ",".join(str(i) for i in range(2000)) + "]").encode()
    assert missing.status == 404
    assert b"Not Found" in missing.body
