"""The test helpers' ports: a port from ``free_port()`` stays held until ``serve()`` listens on it, so
neither another bind nor an outgoing connection's ephemeral port can take it in between."""

from __future__ import annotations

import errno
import socket

import httpx
import pytest
from litestar import Litestar, get

from wf_platform.testing import free_port, serve


@get("/ping", sync_to_thread=False)
def _ping() -> str:
    return "pong"


def test_a_free_port_cannot_be_bound_by_anyone_else_before_it_is_served() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        with pytest.raises(OSError, match="in use") as refused:
            other.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE


async def test_serve_listens_on_the_held_port_and_a_second_serve_binds_it_again() -> None:
    port = free_port()
    app = Litestar([_ping])
    async with serve(app, port, lifespan="off") as url, httpx.AsyncClient(base_url=url) as client:
        assert url == f"http://127.0.0.1:{port}"
        assert (await client.get("/ping")).text == "pong"
    # Served once, the port is released like any server's: serving it again works.
    async with serve(app, port, lifespan="off") as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/ping")).text == "pong"


def test_nothing_listens_on_a_held_port() -> None:
    # Some tests point a client at a free port on purpose ("nothing there"): it must refuse at once.
    port = free_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
