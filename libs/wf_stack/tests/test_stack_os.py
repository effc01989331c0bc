"""free_port(): a port handed out stays held until its server binds it."""

from __future__ import annotations

import socket

import httpx
import nats
import pytest

from wf_stack import NatsServer, PortInUseError
from wf_stack._os import _HELD_PORTS, _MAX_HELD_PORTS, LOCALHOST, ensure_port_free, free_port


def plain_bind(port: int) -> None:
    """Bind as an outgoing connection or an unrelated program would: without SO_REUSEADDR."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, port))


def test_a_free_port_cannot_be_taken_by_another_bind_before_its_server_starts() -> None:
    port = free_port()

    with pytest.raises(OSError, match="Address already in use"):
        plain_bind(port)


def test_nothing_listens_on_a_held_port() -> None:
    # Some tests point a client at a free port on purpose ("nothing there"): it must refuse at once.
    port = free_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_server_that_reuses_addresses_listens_on_a_held_port() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOCALHOST, port))
        server.listen()

        with socket.create_connection((LOCALHOST, port), timeout=2):
            pass
        with pytest.raises(PortInUseError):
            ensure_port_free(port, service="test")


async def test_nats_server_serves_on_the_ports_held_for_it() -> None:
    with NatsServer.start() as server:
        assert {server.port, server.monitor_port} <= _HELD_PORTS.keys()
        nc = await nats.connect(server.url, allow_reconnect=False)
        await nc.close()


def test_only_the_latest_ports_stay_held() -> None:
    ports = [free_port() for _ in range(_MAX_HELD_PORTS + 3)]

    assert len(_HELD_PORTS) == _MAX_HELD_PORTS
    assert set(ports[-_MAX_HELD_PORTS:]) <= _HELD_PORTS.keys()
    for released in ports[:3]:
        plain_bind(released)
