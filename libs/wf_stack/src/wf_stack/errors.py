"""Errors raised by wf_stack.

Every error derives from `StackError`, so a caller that only wants "the stack did not come up"
catches one class::

    StackError
    ├── BinaryNotFoundError    a server binary is not installed (the message says how to install it)
    ├── PortInUseError         a fixed port is already taken by another process
    ├── ServerStartError       a server exited or did not become ready in time (carries the log tail)
    └── ServerStateError       an operation that needs a running (or a stopped) server
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BinaryNotFoundError",
    "PortInUseError",
    "ServerStartError",
    "ServerStateError",
    "StackError",
]


class StackError(Exception):
    """Root of every error raised by wf_stack."""


class BinaryNotFoundError(StackError):
    """A server binary could not be found.

    Attributes:
        program: The program looked for (``"postgres"``, ``"nats-server"``).
        searched: The places that were tried, in order.
    """

    def __init__(self, program: str, *, searched: list[str], hint: str) -> None:
        self.program = program
        self.searched = searched
        where = "\n  ".join(searched) or "(nowhere)"
        super().__init__(f"{program} not found; looked in:\n  {where}\n{hint}")


class PortInUseError(StackError):
    """A fixed port is already bound by another process on 127.0.0.1.

    Attributes:
        port: The port that is taken.
        service: What wanted it (``"PostgreSQL"``, ``"NATS monitoring"``).
    """

    def __init__(self, port: int, *, service: str) -> None:
        self.port = port
        self.service = service
        super().__init__(
            f"port {port} for {service} is already in use on 127.0.0.1; "
            f"stop whatever listens there (e.g. `ss -ltnp 'sport = :{port}'`) or choose another port"
        )


class ServerStartError(StackError):
    """A server exited during start-up or was not ready before the timeout.

    Attributes:
        server: The server's name (``"PostgreSQL"``, ``"nats-server"``).
        log_path: Where its full log is (it may be removed with a throwaway directory).
        log_tail: The last lines of that log, also included in the message.
    """

    def __init__(self, server: str, reason: str, *, log_path: Path | None, log_tail: str) -> None:
        self.server = server
        self.log_path = log_path
        self.log_tail = log_tail
        where = f" (log: {log_path})" if log_path is not None else ""
        tail = log_tail.strip() or "(empty)"
        super().__init__(f"{server} {reason}{where}; last log lines:\n{tail}")


class ServerStateError(StackError):
    """An operation that the server's current state does not allow (e.g. restart after stop)."""
