"""``serve()`` on a port from ``wf_stack.free_port()``: the port is held until a server binds it, and
uvicorn binds it (the holding itself is tested in libs/wf_stack/tests/test_stack_os.py)."""

from __future__ import annotations

import httpx
from litestar import Litestar, get

from wf_platform.testing import serve
from wf_stack import free_port


@get("/ping", sync_to_thread=False)
def _ping() -> str:
    return "pong"


async def test_serve_listens_on_the_held_port_and_a_second_serve_binds_it_again() -> None:
    port = free_port()
    app = Litestar([_ping])
    async with serve(app, port, lifespan="off") as url, httpx.AsyncClient(base_url=url) as client:
        assert url == f"http://127.0.0.1:{port}"
        assert (await client.get("/ping")).text == "pong"
    # Served once, the port is released like any server's: serving it again works.
    async with serve(app, port, lifespan="off") as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/ping")).text == "pong"
