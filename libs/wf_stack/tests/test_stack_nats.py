from __future__ import annotations

import httpx
import nats
import pytest

from wf_stack import NatsServer, PortInUseError
from wf_stack._os import pid_alive
from wf_stack.pytest_plugin import NatsServerFactory


async def stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.state.messages
    finally:
        await nc.close()


async def test_jetstream_server_keeps_its_store_across_restart_and_is_removed_on_exit() -> None:
    with NatsServer.start() as server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as client:
            jsz = (await client.get(f"{server.monitor_url}/jsz")).json()
        assert jsz["config"]["store_dir"].startswith(str(server.store_dir))
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"1")
        await nc.close()
        ports, first_pid, store_dir = (server.port, server.monitor_port), server.pid, server.store_dir

        server.restart()

        assert (server.port, server.monitor_port) == ports
        assert not pid_alive(first_pid)
        assert await stream_messages(server.url, "KEPT") == 1
        last_pid = server.pid

    assert not pid_alive(last_pid)
    assert not store_dir.exists()


def test_killed_server_restarts_and_paused_server_hangs(nats_server_factory: NatsServerFactory) -> None:
    server = nats_server_factory()
    pid = server.pid

    server.kill()

    assert not server.is_running
    assert not pid_alive(pid)
    server.restart()
    assert httpx.get(f"{server.monitor_url}/healthz").status_code == 200

    server.pause()
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{server.monitor_url}/healthz", timeout=0.3)
    finally:
        server.resume()
    assert httpx.get(f"{server.monitor_url}/healthz").status_code == 200


def test_a_taken_fixed_port_is_named_in_the_error(taken_port: int) -> None:
    with pytest.raises(PortInUseError, match=f"port {taken_port} for NATS monitoring"):
        NatsServer.start(monitor_port=taken_port)
