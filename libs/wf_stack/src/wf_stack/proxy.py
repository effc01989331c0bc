"""A TCP fault proxy on 127.0.0.1: put it between a service and Postgres or NATS, then break the link.

```python
with TcpProxy.start(upstream_port=pg.port) as proxy:   # the service connects to proxy.port
    proxy.cut()          # every open connection is reset; new ones are accepted normally
    proxy.blackhole()    # connections stay open but no byte passes, either way
    proxy.restore()      # bytes flow again (connections that lost bytes are reset, see below)
```

The proxy runs its own event loop in a daemon thread, so it keeps forwarding while the caller
blocks (``ServiceProcess.start`` polls readiness synchronously) and it serves sync and async tests
alike; the commands are thread-safe and return once they took effect.

Semantics, chosen to look like real network faults to the clients on either side:

- ``cut()`` aborts both sockets of every open connection (an RST, as a restarted load balancer or
  a dead NAT entry gives): the clients see a connection reset at once.
- ``blackhole()`` keeps every connection open but discards what either side sends, and holds new
  connections without dialling the upstream: a partition. Clients only notice through their own
  timeouts (NATS pings, a statement or pool timeout), which is what the fault is meant to test.
- ``restore()`` lets bytes flow again. A connection that lost bytes during the blackhole carries a
  broken stream (a real TCP stack would have retransmitted, then given up and reset it), so it is
  reset; a connection held during the blackhole that sent nothing (a NATS client waits for the
  server's INFO) is connected to the upstream now and carries on normally.

When the upstream refuses (the server is down), the accepted client connection is closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from wf_stack._os import LOCALHOST

__all__ = ["ProxyStats", "TcpProxy"]

logger = logging.getLogger("wf_stack.proxy")

_T = TypeVar("_T")
_CHUNK = 65536
_COMMAND_TIMEOUT = 10.0


@dataclass
class ProxyStats:
    """Counters since the proxy started."""

    accepted: int = 0
    """Client connections accepted."""
    refused: int = 0
    """Client connections closed because the upstream could not be reached."""
    cut: int = 0
    """Connections aborted by `TcpProxy.cut` (or reset by `TcpProxy.restore`)."""
    dropped_bytes: int = 0
    """Bytes discarded while blackholed."""
    forwarded_bytes: int = 0


@dataclass(eq=False)
class _Connection:
    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter | None = None
    tainted: bool = False
    """Lost bytes to a blackhole: its stream is broken and it is reset on restore."""
    held: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a connection accepted during a blackhole may dial the upstream."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list[asyncio.Task[None]])

    def abort(self) -> None:
        self.tainted = True  # a held connection must not dial the upstream any more
        self.held.set()
        for writer in (self.client_writer, self.upstream_writer):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`; see the module docstring."""

    def __init__(self, *, upstream_host: str, upstream_port: int, port: int) -> None:
        """Prefer `TcpProxy.start`."""
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._blackholed = False
        self._closed = False

    @classmethod
    def start(cls, *, upstream_port: int, upstream_host: str = LOCALHOST, port: int = 0) -> Self:
        """Listen on 127.0.0.1:`port` (0: a free one) and forward to the upstream.

        Raises:
            OSError: The port cannot be bound.
        """
        proxy = cls(upstream_host=upstream_host, upstream_port=upstream_port, port=port)
        proxy._thread.start()
        proxy._call(proxy._listen())
        return proxy

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, what a client dials instead of the upstream."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def blackholed(self) -> bool:
        """Whether bytes are being dropped right now."""
        return self._blackholed

    @property
    def open_connections(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._connections)

    def cut(self) -> int:
        """Reset every open connection (both sides); return how many were cut."""
        return self._call(self._cut())

    def blackhole(self) -> None:
        """Drop every byte both ways, and hold new connections, until `restore`."""
        self._call(self._set_blackhole(True))

    def restore(self) -> None:
        """Forward again; connections that lost bytes meanwhile are reset."""
        self._call(self._set_blackhole(False))

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError, TimeoutError):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_COMMAND_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "blackholed" if self._blackholed else "forwarding"
        return f"<TcpProxy {self.address} -> {self.upstream_host}:{self.upstream_port} {state}>"

    # -- the proxy's own thread ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, _T], /) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=_COMMAND_TIMEOUT)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> int:
        victims = list(self._connections)
        for connection in victims:
            connection.abort()
        self._connections.difference_update(victims)
        self.stats.cut += len(victims)
        return len(victims)

    async def _set_blackhole(self, on: bool) -> None:
        self._blackholed = on
        if on:
            return
        tainted = [c for c in self._connections if c.tainted]
        for connection in tainted:
            connection.abort()
        self._connections.difference_update(tainted)
        self.stats.cut += len(tainted)
        for connection in self._connections:
            connection.held.set()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(reader, writer)
        self._connections.add(connection)
        self.stats.accepted += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            await self._serve(connection)
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(connection)
            connection.abort()
            self._handlers.discard(handler)  # type: ignore[arg-type]

    async def _serve(self, connection: _Connection) -> None:
        if self._blackholed:
            # A partition: the client is connected to us but never reaches the upstream.
            swallow = asyncio.create_task(self._swallow(connection))
            connection.tasks.append(swallow)
            await connection.held.wait()
            swallow.cancel()
            await asyncio.gather(swallow, return_exceptions=True)
            if connection.tainted:
                return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            self.stats.refused += 1
            return
        connection.upstream_writer = upstream_writer
        if connection not in self._connections:  # cut while dialling
            return
        pumps = [
            asyncio.create_task(self._pump(connection, connection.client_reader, upstream_writer)),
            asyncio.create_task(self._pump(connection, upstream_reader, connection.client_writer)),
        ]
        connection.tasks.extend(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _swallow(self, connection: _Connection) -> None:
        while data := await connection.client_reader.read(_CHUNK):
            connection.tainted = True
            self.stats.dropped_bytes += len(data)

    async def _pump(
        self, connection: _Connection, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(_CHUNK):
                if self._blackholed:
                    connection.tainted = True
                    self.stats.dropped_bytes += len(data)
                    continue
                sink.write(data)
                await sink.drain()
                self.stats.forwarded_bytes += len(data)
