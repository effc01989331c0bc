"""The `make dev` stack: Postgres and NATS on the fixed development ports, data kept in ``.dev``.

`build_dev_stack` is where later pieces join in order (the three services on 8001/8002/8003, an
example worker): add a `CommandUnit` whose ``env`` callable reads the servers' URLs from the
`ServerUnit`s added before it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from wf_stack.nats import NatsServer
from wf_stack.postgres import PostgresServer
from wf_stack.supervisor import CommandUnit, DevStack, PrefixedOutput, ServerUnit

__all__ = [
    "DEV_NATS_MONITOR_PORT",
    "DEV_NATS_PORT",
    "DEV_POSTGRES_PORT",
    "SERVICE_PORTS",
    "RegisterExamples",
    "build_dev_stack",
    "service_environment",
]

SERVICE_PORTS = {"definition-registry": 8001, "orchestrator": 8002, "task-inbox": 8003}
"""The fixed development ports of the services (docs/conventions.md)."""

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
    services: bool = True,
    service_ports: Mapping[str, int] = SERVICE_PORTS,
    examples: bool = True,
) -> DevStack:
    """The development stack, not yet started.

    Args:
        directory: Holds ``pg`` (initialised once, then reused) and ``nats`` (the JetStream store).
        fsync: Postgres ``fsync``; off loses data only if the machine (not a process) crashes.
        output: Where prefixed output goes; standard output by default.
        postgres_port: Postgres port (the fixed dev port unless a test needs another).
        nats_port: NATS client port.
        nats_monitor_port: NATS monitoring port.
        services: Also run the three services (registry, orchestrator, inbox).
        service_ports: Their ports (8001-8003 unless a test needs others).
        examples: With the services, register the example definitions (tenant ``acme``) and run
            the example worker (every tenant), when the repository's ``examples/`` is there.
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
    if services:
        for name, port in service_ports.items():
            stack.need_port(port, name)
            module = name.replace("-", "_")
            stack.add(
                CommandUnit(
                    name,
                    [sys.executable, "-m", module],
                    env=functools.partial(
                        service_environment,
                        name,
                        directory=directory,
                        postgres_port=postgres_port,
                        nats_port=nats_port,
                        ports=service_ports,
                    ),
                    describe=f"http://127.0.0.1:{port}/",
                )
            )
        if examples:
            _add_examples(stack, directory, nats_port=nats_port, ports=service_ports)
    return stack


def _add_examples(stack: DevStack, directory: Path, *, nats_port: int, ports: Mapping[str, int]) -> None:
    """The example definitions (registered for tenant ``acme``) and the example worker (every tenant).

    The repository root is the parent of the data directory (``.dev``); the worker runs there so
    that ``examples.worker:steps`` is importable.
    """
    root = directory.parent
    if not (root / "examples" / "worker.py").is_file():
        return
    stack.add(
        RegisterExamples(
            examples=root / "examples",
            key_dir=directory,
            registry_url=f"http://127.0.0.1:{ports['definition-registry']}",
            orchestrator_url=f"http://127.0.0.1:{ports['orchestrator']}",
        )
    )
    stack.add(
        CommandUnit(
            "worker",
            [sys.executable, "-m", "wf_cli", "worker", "run", "examples.worker:steps"],
            env={
                "WF_WORKER_NATS_URL": f"nats://127.0.0.1:{nats_port}",
                "WF_WORKER_TENANT": "*",
                "OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none"),
                "OTEL_SERVICE_NAME": "example-worker",
            },
            cwd=root,
            describe="examples.worker:steps for every tenant",
        )
    )


def service_environment(
    service: str,
    *,
    directory: Path,
    postgres_port: int,
    nats_port: int,
    ports: Mapping[str, int] = SERVICE_PORTS,
) -> dict[str, str]:
    """A service's dev settings: the dev databases and NATS, the dev key pair (created once here)."""
    from wf_platform.devkeys import ensure_dev_keys  # the services' library, installed in the workspace

    ensure_dev_keys(directory)
    prefix = service.replace("-", "_").upper()
    database = {
        "definition-registry": "wf_registry",
        "orchestrator": "wf_orchestrator",
        "task-inbox": "wf_inbox",
    }
    env = {
        f"{prefix}_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{postgres_port}/{database[service]}",
        f"{prefix}_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        f"{prefix}_JWT_PUBLIC_KEY_FILE": str(directory / "jwt-public.pem"),
        f"{prefix}_PORT": str(ports[service]),
        "OTEL_TRACES_EXPORTER": os.environ.get("OTEL_TRACES_EXPORTER", "none"),
    }
    if service == "orchestrator":
        env["ORCHESTRATOR_REGISTRY_URL"] = f"http://127.0.0.1:{ports['definition-registry']}"
    if service == "task-inbox":
        env["TASK_INBOX_ORCHESTRATOR_URL"] = f"http://127.0.0.1:{ports['orchestrator']}"
        env["TASK_INBOX_DEV_LOGIN"] = "true"
        env["TASK_INBOX_DEV_PRIVATE_KEY_FILE"] = str(directory / "jwt-private.pem")
    return env


class RegisterExamples:
    """A one-shot unit: waits for the registry and orchestrator to be ready, then registers the
    example definitions (``examples/*/definition.yaml``) for tenant ``acme`` with a dev token.

    It stays "running" after it is done (a unit that exits would stop the stack).
    """

    def __init__(
        self,
        *,
        examples: Path,
        key_dir: Path,
        registry_url: str,
        orchestrator_url: str,
        tenant: str = "acme",
        timeout: float = 120.0,
    ) -> None:
        self.name = "examples"
        self._examples = examples
        self._key_dir = key_dir
        self._registry_url = registry_url
        self._orchestrator_url = orchestrator_url
        self._tenant = tenant
        self._timeout = timeout
        self._registered: list[str] = []

    def start(self, output: PrefixedOutput) -> None:
        """Register every example (a failure is printed, and does not stop the stack)."""
        import time

        import httpx

        from wf_client import SyncWorkflowClient, WorkflowClientError  # workspace libraries
        from wf_platform.devkeys import ensure_dev_keys, mint_token

        deadline = time.monotonic() + self._timeout
        for url in (self._registry_url, self._orchestrator_url):
            while True:
                try:
                    if httpx.get(f"{url}/health/ready", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    output.line(self.name, f"{url} is not ready; examples not registered")
                    return
                time.sleep(0.5)
        keys = ensure_dev_keys(self._key_dir)
        token = mint_token(
            keys.private_key(),
            tenant=self._tenant,
            sub="make-dev",
            roles=["definitions:read", "definitions:write"],
            groups=[],
            ttl_seconds=300,
            kid=keys.kid,
        )
        with SyncWorkflowClient(registry_url=self._registry_url, token=token) as client:
            for path in sorted(self._examples.glob("*/definition.yaml")):
                try:
                    body = client.register(path)
                except WorkflowClientError as exc:
                    output.line(self.name, f"{path}: {exc}")
                    continue
                self._registered.append(f"{body.get('name')} {body.get('version')}")
                output.line(
                    self.name, f"registered {body.get('name')} {body.get('version')} for {self._tenant}"
                )

    def stop(self) -> None:
        """Nothing runs."""

    def exit_code(self) -> int | None:
        """Never exits on its own."""
        return None

    def summary(self) -> str:
        """What was registered."""
        return f"{', '.join(self._registered) or 'no examples'} registered for tenant {self._tenant}"
