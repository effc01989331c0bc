"""A tiny HTTP endpoint for containers: ``/health/live``, ``/health/ready`` and ``/metrics``.

It is deliberately not a web framework (the worker SDK stays small): one request per connection,
``GET`` only, ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from wf_worker.metrics import render

__all__ = ["HealthServer"]


class HealthServer:
    """Serves liveness (the process runs), readiness (``ready()`` holds) and Prometheus metrics."""

    def __init__(self, host: str, port: int, *, ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            # Skip the headers: nothing in them matters here.
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, content_type, body = self._respond(parts[0] if parts else "", path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/health/live":
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == "/health/ready":
            if self._ready():
                return "200 OK", "application/json", b'{"status":"ok"}'
            return "503 Service Unavailable", "application/json", b'{"status":"not ready"}'
        if path == "/metrics":
            rendered = render()
            if rendered is None:
                return "404 Not Found", "text/plain", b"prometheus-client is not installed\n"
            return "200 OK", rendered[1], rendered[0]
        return "404 Not Found", "text/plain", b"not found\n"
