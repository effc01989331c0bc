"""The `make dev` stack: Postgres and NATS on the fixed development ports, data kept in ``.dev``.

`build_dev_stack` is where later pieces join in order (the three services on 8001/8002/8003, an
example worker): add a `CommandUnit` whose ``env`` callable reads the servers' URLs from the
`ServerUnit`s added before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from wf_stack.nats import NatsServer
from wf_stack.postgres import PostgresServer
from wf_stack.supervisor import DevStack, ServerUnit

__all__ = ["DEV_NATS_MONITOR_PORT", "DEV_NATS_PORT", "DEV_POSTGRES_PORT", "build_dev_stack"]

DEV_POSTGRES_PORT = 5433
DEV_NATS_PORT = 4222
DEV_NATS_MONITOR_PORT = 8222


def build_dev_stack(
    directory: Path,
    *,
    fsync: bool = False,
    output: TextIO | None = None,
    postgres_port: int = DEV_POSTGRES_PORT,
    nats_port: int = DEV_NATS_PORT,
    nats_monitor_port: int = DEV_NATS_MONITOR_PORT,
) -> DevStack:
    """The development stack, not yet started.

    Args:
        directory: Holds ``pg`` (initialised once, then reused) and ``nats`` (the JetStream store).
        fsync: Postgres ``fsync``; off loses data only if the machine (not a process) crashes.
        output: Where prefixed output goes; standard output by default.
        postgres_port: Postgres port (the fixed dev port unless a test needs another).
        nats_port: NATS client port.
        nats_monitor_port: NATS monitoring port.
    """
    directory = directory.absolute()
    stack = DevStack(output=output)
    stack.need_port(postgres_port, "PostgreSQL")
    stack.need_port(nats_port, "NATS")
    stack.need_port(nats_monitor_port, "NATS monitoring")
    stack.add(
        ServerUnit(
            "postgres",
            lambda: PostgresServer.start(port=postgres_port, data_dir=directory / "pg", fsync=fsync),
            describe=lambda pg: f"{pg.url} (data {pg.data_dir})",
        )
    )
    stack.add(
        ServerUnit(
            "nats",
            lambda: NatsServer.start(
                port=nats_port, monitor_port=nats_monitor_port, store_dir=directory / "nats"
            ),
            describe=lambda nats: f"{nats.url} (monitoring {nats.monitor_url}, store {nats.store_dir})",
        )
    )
    return stack
