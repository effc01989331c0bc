"""The local stack, as code: throwaway PostgreSQL and nats-server (JetStream) on 127.0.0.1.

Used by ``make dev`` (``python -m wf_stack dev``), ``make test`` (``python -m wf_stack run -- pytest``),
the benchmark, and tests through the pytest plugin (`wf_stack.pytest_plugin`, registered as a
``pytest11`` entry point: fixtures ``postgres_url``, ``fresh_database``, ``nats_url``,
``nats_monitor_url``, ``nats_server_factory``, ``postgres_server_factory``)::

    with PostgresServer.start() as pg, NatsServer.start() as nats:
        ...  # pg.url, nats.url, nats.monitor_url

Servers can be stopped, restarted on the same data and ports, killed, paused and resumed, which is
what fault-injection tests need.
"""

from wf_stack._os import free_port
from wf_stack.errors import (
    BinaryNotFoundError,
    PortInUseError,
    ServerStartError,
    ServerStateError,
    StackError,
)
from wf_stack.nats import NatsServer, find_nats_server
from wf_stack.postgres import PostgresServer, ShutdownMode, find_postgres_bindir

__all__ = [
    "BinaryNotFoundError",
    "NatsServer",
    "PortInUseError",
    "PostgresServer",
    "ServerStartError",
    "ServerStateError",
    "ShutdownMode",
    "StackError",
    "find_nats_server",
    "find_postgres_bindir",
    "free_port",
]
