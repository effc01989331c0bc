"""The fault-injection harness: a stack whose links can be broken, a ledger worker, and the accounting.

Used by ``test_faults.py`` (the fast tier, in ``make test``) and ``tests/chaos`` (``make test-chaos``).

- `Infra` (one per test module): a private Postgres and nats-server (so killing or pausing them
  never disturbs the session's shared servers), a `TcpProxy` in front of each, and the registry.
  The orchestrator and the inbox connect *through* the proxies (cut / blackhole on command); the
  registry, the test's worker and the accounting connect directly.
- `Stack` (one per test): a fresh orchestrator database, a unique tenant, the orchestrator as a real
  process (``kill -9``, restart), a registered three-step chain, a `Load` generator and the ledger.
- `LedgerWorker`: a raw nats-py worker that writes every side effect to the `EffectLedger` keyed
  by (job id, attempt) *before* it publishes the result, and records whether its ack was confirmed
  by the server (``ack_sync``).
- `account`: after a test, waits (bounded) until every accepted start is terminal and checks the
  books; see `Accounting.problems` for exactly what is allowed.

At-least-once, as documented here and checked by `account`:

- Every start answered 201 (an *accepted* start) reaches the expected terminal state: none is lost
  and none stays unfinished. A start that got no definite answer (a timeout, a reset, a 503) is
  re-sent with the same ``Idempotency-Key`` until it gets one, so it is either accepted or it never
  existed.
- The worker may execute the same (job, attempt) more than once only when an earlier execution of
  it was not confirmed: the worker died or was cut after the effect and before the server confirmed
  its ack (its result may or may not have been published). A re-execution after a *confirmed* ack
  is a duplicate the system should not cause; the one exception, allowed only in tests that
  ``kill -9`` the nats-server, is an ack confirmed shortly before the crash: JetStream writes
  consumer state to disk asynchronously, so a crash may forget it (``ack_loss_allowed``).
- Each step of each instance runs as one attempt (one job id) unless the test lets deadlines
  re-dispatch it; the orchestrator applies a (job, attempt) once, so a duplicate result never
  re-runs the next step. The instance's context holds every step's output.
- The outbox is drained: no unsent row in ``wf.outbox`` of the orchestrator's database, and the
  orchestrator's results consumer has nothing pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import msgspec
import nats
from nats.js.api import AckPolicy, ConsumerConfig

from wf_platform.streams import WF_EVENTS, WF_JOBS, WF_RESULTS, WF_TASKS, ensure_stream
from wf_platform.testing import SigningKeys, bearer, unique_tenant
from wf_stack import free_port
from wf_stack.nats import NatsServer
from wf_stack.postgres import PostgresServer
from wf_stack.proxy import TcpProxy
from wf_stack.pytest_plugin import database_url
from wf_stack.services import ServiceProcess
from workflow_core.messages import JobMessage, JobResult

logger = logging.getLogger("faultkit")

ROLES = ("instances:read", "instances:write", "definitions:write", "definitions:read")
STEPS = ("fk.one", "fk.two", "fk.three")
TERMINAL = frozenset({"completed", "failed", "cancelled"})


# -- infrastructure ------------------------------------------------------------------------------


class Infra:
    """Private Postgres + nats-server, a proxy in front of each, and the registry (see the module doc)."""

    def __init__(self, *, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.keys = SigningKeys.generate()
        self.public_key = log_dir / "public.pem"
        self.public_key.write_text(self.keys.public_pem)
        # Not throwaway: `stop(mode="immediate")` must keep the data for the restart.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="wf-fk-pg-", dir=_shm_or_tmp()))
        self.pg = PostgresServer.start(data_dir=self.pg_dir, max_connections=120)
        self.nats = NatsServer.start()
        self.pg_proxy = TcpProxy.start(upstream_port=self.pg.port)
        self.nats_proxy = TcpProxy.start(upstream_port=self.nats.port)
        self.registry_port = free_port()
        self.registry = ServiceProcess.start(
            "definition_registry",
            env=_common_env()
            | {
                "DEFINITION_REGISTRY_DATABASE_URL": database_url(self.pg.url, "fk_registry"),
                "DEFINITION_REGISTRY_NATS_URL": self.nats.url,
                "DEFINITION_REGISTRY_JWT_PUBLIC_KEY_FILE": str(self.public_key),
                "DEFINITION_REGISTRY_PORT": str(self.registry_port),
            },
            port=self.registry_port,
            log_dir=log_dir,
        )

        # One orchestrator for the module (a start costs seconds of CPU); tests that need other
        # settings start their own. Tests kill and restart it; `heal` makes sure it is up.
        self.orchestrator_database = "fk_orch"
        port = free_port()
        self.orchestrator = ServiceProcess.start(
            "orchestrator",
            env=self.orchestrator_env(self.orchestrator_database, port),
            port=port,
            log_dir=log_dir,
        )

    @property
    def nats_via_proxy(self) -> str:
        return f"nats://{self.nats_proxy.address}"

    def orchestrator_env(self, database: str, port: int, **overrides: str) -> dict[str, str]:
        """The orchestrator's environment: Postgres and NATS through the proxies, short timers."""
        env = _common_env() | {
            "ORCHESTRATOR_DATABASE_URL": (
                f"postgresql+asyncpg://postgres@{self.pg_proxy.address}/{database}"
            ),
            "ORCHESTRATOR_NATS_URL": self.nats_via_proxy,
            "ORCHESTRATOR_JWT_PUBLIC_KEY_FILE": str(self.public_key),
            "ORCHESTRATOR_PORT": str(port),
            "ORCHESTRATOR_REGISTRY_URL": f"http://127.0.0.1:{self.registry_port}",
            "ORCHESTRATOR_OUTBOX_POLL_SECONDS": "0.2",
            "ORCHESTRATOR_TIMER_POLL_SECONDS": "0.1",
            # What a killed or cut process had fetched comes back after the ack wait: keep it short.
            "ORCHESTRATOR_CONSUMER_ACK_WAIT_SECONDS": "3",
            "ORCHESTRATOR_DB_POOL_TIMEOUT_SECONDS": "5",
        }
        return env | {f"ORCHESTRATOR_{k.upper()}": v for k, v in overrides.items()}

    def heal(self) -> None:
        """Undo whatever a test left broken: resume or restart the servers, restore the proxies."""
        self.pg_proxy.restore()
        self.nats_proxy.restore()
        if not self.nats.is_running:
            self.nats.restart()
        else:
            self.nats.resume()
        if not self.pg.is_running:
            self.pg.restart()
        else:
            self.pg.resume()
        if not _ready(self.orchestrator.url):
            self.orchestrator.restart()

    def close(self) -> None:
        for step in (
            self.orchestrator.stop,
            self.registry.stop,
            self.pg_proxy.stop,
            self.nats_proxy.stop,
            self.nats.stop,
            lambda: self.pg.stop(mode="fast"),
        ):
            with contextlib.suppress(Exception):
                step()
        import shutil

        shutil.rmtree(self.pg_dir, ignore_errors=True)


def _ready(url: str) -> bool:
    for _ in range(50):  # a service that just lost a dependency may take a moment to reconnect
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _shm_or_tmp() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


def _common_env() -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "none", "PYTHONUNBUFFERED": "1", "ORCHESTRATOR_LOG_LEVEL": "WARNING"}


@contextlib.contextmanager
def infra_for(log_dir: Path) -> Iterator[Infra]:
    infra = Infra(log_dir=log_dir)
    try:
        yield infra
    finally:
        infra.close()


# -- the ledger and its worker -------------------------------------------------------------------


Outcome = Literal["confirmed", "unconfirmed"]


@dataclass
class EffectLedger:
    """Every side effect the worker performed, keyed by (job id, attempt), with what became of it."""

    outcomes: dict[tuple[str, int], list[Outcome]] = field(default_factory=dict)
    """Per (job, attempt), one entry per execution: was its ack confirmed by the server?"""
    confirmed_at: dict[tuple[str, int, int], float] = field(default_factory=dict)
    """(job, attempt, execution index) -> when its ack was confirmed."""
    jobs_of_step: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    """(instance, step) -> the job ids executed for it."""

    def effect(self, job: JobMessage) -> int:
        """Record the side effect of one execution; return its index for `settled`."""
        runs = self.outcomes.setdefault((job.job_id, job.attempt), [])
        runs.append("unconfirmed")
        self.jobs_of_step[(job.instance_id, job.step)].add(job.job_id)
        return len(runs) - 1

    def settled(self, job: JobMessage, index: int) -> None:
        """The server confirmed the ack of execution `index`: its result is in, the job is done."""
        self.outcomes[(job.job_id, job.attempt)][index] = "confirmed"
        self.confirmed_at[(job.job_id, job.attempt, index)] = time.monotonic()

    @property
    def executions(self) -> int:
        return sum(len(runs) for runs in self.outcomes.values())

    @property
    def duplicated(self) -> int:
        """Executions beyond the first of each (job, attempt)."""
        return sum(len(runs) - 1 for runs in self.outcomes.values())


JobPolicy = Callable[[JobMessage], Awaitable["JobResult | Literal['die'] | None"]]
"""What the worker does after the effect: a result to publish, None (never answer), or "die"."""


def completed(job: JobMessage) -> JobResult:
    return JobResult(
        job_id=job.job_id, attempt=job.attempt, status="completed", output={job.step: job.attempt}
    )


async def _always_complete(job: JobMessage) -> JobResult:
    return completed(job)


class LedgerWorker:
    """A raw nats-py worker for one tenant's jobs; see the module docstring.

    ``policy`` decides after the effect. ``"die"`` makes the worker die on the spot: it stops
    fetching and closes its connection without publishing or acking anything in flight (what a
    ``kill -9`` of a worker process looks like to the server); `start` a new one to carry on.
    """

    def __init__(
        self,
        nats_url: str,
        tenant: str,
        ledger: EffectLedger,
        *,
        policy: JobPolicy = _always_complete,
        ack_wait: float = 4.0,
        batch: int = 32,
        name: str = "fk-worker",
    ) -> None:
        self.nats_url = nats_url
        self.tenant = tenant
        self.ledger = ledger
        self.policy = policy
        self.ack_wait = ack_wait
        self.batch = batch
        self.name = name
        self.errors: Counter[str] = Counter()
        self.dead = asyncio.Event()
        self._nc: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> LedgerWorker:
        self.dead.clear()
        self._stopping = False
        self._nc = await nats.connect(
            self.nats_url,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            ping_interval=2,
            max_outstanding_pings=2,
        )
        js = self._nc.jetstream()
        for spec in (WF_JOBS, WF_RESULTS, WF_TASKS, WF_EVENTS):
            await ensure_stream(js, spec)
        subject = f"wf.jobs.{self.tenant}.>"
        subscription = await js.pull_subscribe(
            subject,
            durable=f"fk-{self.tenant}",
            stream="WF_JOBS",
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, filter_subject=subject
            ),
        )
        self._task = asyncio.get_running_loop().create_task(self._loop(js, subscription))
        return self

    async def _loop(self, js: Any, subscription: Any) -> None:
        while not self._stopping:
            try:
                messages = await subscription.fetch(self.batch, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # disconnected, reconnecting: keep trying (bounded by the test)
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            outcomes = await asyncio.gather(*(self._one(js, m) for m in messages))
            if "die" in outcomes:
                await self._die()
                return

    async def _one(self, js: Any, message: Any) -> str:
        job = msgspec.json.decode(message.data, type=JobMessage)
        index = self.ledger.effect(job)  # the side effect happens here, before anything is reported
        decision = await self.policy(job)
        if decision == "die":
            return "die"
        if decision is None:
            return "silent"
        assert isinstance(decision, JobResult)
        try:
            await js.publish(
                f"wf.results.{self.tenant}",
                msgspec.json.encode(decision),
                headers={"Nats-Msg-Id": f"result:{job.job_id}:{job.attempt}", "Wf-Worker": self.name},
                timeout=3,
            )
            await message.ack_sync(timeout=3)
        except Exception as exc:  # unconfirmed: the job comes back after the ack wait
            self.errors[type(exc).__name__] += 1
            return "unconfirmed"
        self.ledger.settled(job, index)
        return "done"

    async def _die(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
        self.dead.set()

    async def stop(self) -> None:
        # Python 3.11's asyncio.wait_for (inside nats-py's fetch) can swallow a cancellation that
        # arrives as its inner wait completes: the loop would then fetch on forever and `await task`
        # never return (a chaos soak hung here for 800 s). The flag ends the loop at its next turn,
        # and the cancellation is repeated, bounded, until the task is done.
        self._stopping = True
        task, self._task = self._task, None
        for _ in range(20):  # bounded: 10 s
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if task is not None and task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()  # retrieved, so that asyncio does not log it as never retrieved
        await self._die()


# -- load ----------------------------------------------------------------------------------------


@dataclass
class StartRecord:
    key: str
    index: int
    instance_id: str | None = None
    tries: int = 0
    statuses: list[str] = field(default_factory=list)
    """Every answer: an HTTP status, or the name of the transport error."""


class Load:
    """Starts instances, each with its own ``Idempotency-Key``, re-sent until it gets a definite answer.

    Every answer and its latency is recorded (`responses`), so a test can check how the API behaved
    while a dependency was down (a 503 with ``Retry-After``, never a hang past the client timeout).
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        definition: str = "fk_chain",
        client_timeout: float = 12.0,
        concurrency: int = 8,
    ) -> None:
        self.url = url
        self.headers = headers
        self.definition = definition
        self.client_timeout = client_timeout
        self.concurrency = concurrency
        self.records: list[StartRecord] = []
        self.responses: list[tuple[float, str, float, dict[str, str]]] = []
        """(monotonic time, status or error name, latency, selected headers)."""
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(base_url=url, timeout=client_timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def accepted(self) -> list[str]:
        return [r.instance_id for r in self.records if r.instance_id is not None]

    @property
    def unresolved(self) -> list[StartRecord]:
        return [r for r in self.records if r.instance_id is None]

    async def _post(self, record: StartRecord) -> None:
        started = time.monotonic()
        try:
            response = await self._client.post(
                "/v1/instances",
                json={"definition": self.definition, "input": {"i": record.index}},
                headers=self.headers | {"Idempotency-Key": record.key},
            )
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
            self.responses.append((started, outcome, time.monotonic() - started, {}))
            record.statuses.append(outcome)
            return
        kept = {k: v for k, v in response.headers.items() if k.lower() in {"retry-after", "content-type"}}
        self.responses.append((started, str(response.status_code), time.monotonic() - started, kept))
        record.statuses.append(str(response.status_code))
        if response.status_code == 201:
            record.instance_id = str(response.json()["id"])
        elif response.status_code < 500 and response.status_code != 429:
            raise AssertionError(f"start refused with {response.status_code}: {response.text}")

    async def _start(self, record: StartRecord, *, give_up_after: float) -> None:
        deadline = time.monotonic() + give_up_after
        async with self._semaphore:
            while record.instance_id is None and time.monotonic() < deadline and record.tries < 200:
                record.tries += 1
                await self._post(record)
                if record.instance_id is None:
                    await asyncio.sleep(0.5)

    def fire(self, count: int = 1, *, give_up_after: float = 60.0) -> None:
        """Start `count` instances in the background."""
        if self._closed:
            return
        for _ in range(count):
            record = StartRecord(key=uuid.uuid4().hex, index=len(self.records))
            self.records.append(record)
            task = asyncio.get_running_loop().create_task(self._start(record, give_up_after=give_up_after))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def burst(self, count: int) -> list[str]:
        """Start `count` instances and wait for their answers."""
        before = len(self.records)
        self.fire(count)
        await self.settle()
        return [r.instance_id for r in self.records[before:] if r.instance_id is not None]

    async def steady(self, *, rate: float, seconds: float) -> None:
        """Start `rate` instances per second for `seconds` (does not wait for the answers)."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        sent = 0
        while (elapsed := loop.time() - begin) < seconds and not self._closed:
            due = int(elapsed * rate) + 1
            if due > sent:
                self.fire(due - sent)
                sent = due
            await asyncio.sleep(min(0.05, 1 / rate))

    async def settle(self, *, timeout: float = 120.0) -> None:
        """Wait (bounded) for every start in flight to get its answer or give up."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def resolve(self) -> None:
        """Re-send every unanswered start with its key once more (after the faults healed)."""
        for record in self.unresolved:
            await self._start(record, give_up_after=30.0)

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._client.aclose()


# -- one test's stack ----------------------------------------------------------------------------


def chain_definition(
    name: str = "fk_chain", *, retry: dict[str, Any] | None = None, timeout: float | None = None
) -> dict[str, Any]:
    def step(step_type: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": "machine", "step_type": step_type}
        if retry is not None:
            spec["retry"] = retry
        if timeout is not None:
            spec["timeout"] = timeout
        return spec

    return {
        "name": name,
        "version": "1.0.0",
        "steps": {f"s{i}": step(t) for i, t in enumerate(STEPS)},
        "edges": [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(len(STEPS) - 1)],
    }


class Stack:
    """One test's tenant, ledger and load, on the module's orchestrator or on one of its own."""

    def __init__(self, infra: Infra, *, orchestrator_settings: dict[str, str] | None = None) -> None:
        self.infra = infra
        self.tenant = unique_tenant("fk")
        # A day: the soak runs longer than a default token lives.
        self.headers = bearer(infra.keys.token(tenant=self.tenant, roles=ROLES, ttl=86_400))
        if orchestrator_settings is None:
            self.database = infra.orchestrator_database
            self.orchestrator = infra.orchestrator
            self.own_orchestrator = False
        else:
            self.database = f"fk_orch_{uuid.uuid4().hex[:10]}"
            port = free_port()
            env = infra.orchestrator_env(self.database, port, **orchestrator_settings)
            self.orchestrator = ServiceProcess.start(
                "orchestrator", env=env, port=port, log_dir=infra.log_dir
            )
            self.own_orchestrator = True
        self.ledger = EffectLedger()
        self.load = Load(self.orchestrator.url, self.headers)
        self.workers: list[LedgerWorker] = []

    async def register(self, definition: dict[str, Any] | None = None) -> None:
        async with httpx.AsyncClient(base_url=self.infra.registry.url, timeout=15) as client:
            response = await client.post(
                "/v1/definitions", json=definition or chain_definition(), headers=self.headers
            )
            assert response.status_code in (200, 201), response.text

    async def worker(self, **options: Any) -> LedgerWorker:
        worker = await LedgerWorker(self.infra.nats.url, self.tenant, self.ledger, **options).start()
        self.workers.append(worker)
        return worker

    async def restart_orchestrator(self, *, kill: bool = True) -> None:
        """kill -9 (or stop) and start again on the same port, off the event loop."""
        if kill:
            self.orchestrator.kill()
        await asyncio.to_thread(self.orchestrator.restart)

    async def outbox_unsent(self) -> int:
        conn = await asyncpg.connect(self.infra.pg.url_for(self.database), timeout=10)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM wf.outbox WHERE sent_at IS NULL"))
        finally:
            await conn.close()

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.load.aclose()
        if self.own_orchestrator:
            await asyncio.to_thread(self.orchestrator.stop)


@contextlib.asynccontextmanager
async def stack_for(infra: Infra, **options: Any) -> AsyncIterator[Stack]:
    stack = await asyncio.to_thread(Stack, infra, **options)
    try:
        await stack.register()
        yield stack
    finally:
        await stack.close()
        await asyncio.to_thread(infra.heal)


# -- accounting ----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """The books after a run; `problems` lists every rule that was broken (empty when all is well)."""

    started: int = 0
    """Starts accepted (201)."""
    unresolved_starts: int = 0
    """Starts that never got a definite answer even after healing (they must not exist either)."""
    terminal: Counter[str] = field(default_factory=Counter)
    unfinished: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Accepted but unknown to the orchestrator."""
    wrong_outcome: list[str] = field(default_factory=list)
    executions: int = 0
    duplicated_effects: int = 0
    """Executions beyond the first of a (job, attempt)."""
    excused_duplicates: int = 0
    """Of those, re-executions after an unconfirmed execution (the worker died or was cut)."""
    ack_lost_duplicates: int = 0
    """Re-executions after a confirmed ack that a nats-server crash may forget (if allowed)."""
    unexcused_duplicates: list[str] = field(default_factory=list)
    steps_run_twice: list[str] = field(default_factory=list)
    incomplete_data: list[str] = field(default_factory=list)
    outbox_unsent: int = 0
    results_pending: int = 0
    seconds_to_drain: float = 0.0

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.unresolved_starts:
            found.append(f"{self.unresolved_starts} starts never got an answer")
        if self.lost:
            found.append(f"{len(self.lost)} accepted instances lost, e.g. {self.lost[:3]}")
        if self.unfinished:
            found.append(f"{len(self.unfinished)} instances unfinished, e.g. {self.unfinished[:3]}")
        if self.wrong_outcome:
            found.append(f"{len(self.wrong_outcome)} instances ended wrongly, e.g. {self.wrong_outcome[:3]}")
        if self.unexcused_duplicates:
            found.append(f"effects duplicated beyond at-least-once: {self.unexcused_duplicates[:5]}")
        if self.steps_run_twice:
            found.append(f"steps dispatched twice: {self.steps_run_twice[:5]}")
        if self.incomplete_data:
            found.append(f"contexts missing a step's output: {self.incomplete_data[:3]}")
        if self.outbox_unsent:
            found.append(f"{self.outbox_unsent} outbox rows never sent")
        if self.results_pending:
            found.append(f"{self.results_pending} results still pending for the orchestrator")
        return found

    def summary(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "terminal": dict(self.terminal),
            "lost": len(self.lost),
            "unfinished": len(self.unfinished),
            "unresolved_starts": self.unresolved_starts,
            "executions": self.executions,
            "duplicated_effects": self.duplicated_effects,
            "excused_duplicates": self.excused_duplicates,
            "ack_lost_duplicates": self.ack_lost_duplicates,
            "unexcused_duplicates": len(self.unexcused_duplicates),
            "steps_run_twice": len(self.steps_run_twice),
            "outbox_unsent": self.outbox_unsent,
            "results_pending": self.results_pending,
            "seconds_to_drain": round(self.seconds_to_drain, 2),
        }


async def _statuses(client: httpx.AsyncClient, headers: dict[str, str], definition: str) -> dict[str, str]:
    """Every instance of `definition` -> status (keyset pages of 200, bounded)."""
    found: dict[str, str] = {}
    cursor: str | None = None
    for _ in range(500):
        params: dict[str, Any] = {"definition": definition, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/instances", params=params, headers=headers)
        response.raise_for_status()
        page = response.json()
        found.update({item["id"]: item["status"] for item in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            break
    return found


async def _results_pending(nats_url: str) -> int:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=2)
    try:
        info = await nc.jetstream().consumer_info("WF_RESULTS", "orchestrator-results")
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    finally:
        await nc.close()


async def account(
    stack: Stack,
    *,
    expect: str = "completed",
    timeout: float = 90.0,
    ack_loss_allowed_before: float | Sequence[float] = (),
    redispatch_allowed: bool = False,
    check_data: bool = True,
) -> Accounting:
    """Wait (bounded) until every accepted start is terminal, then check the books (module docstring).

    Args:
        expect: the terminal status every instance must reach.
        timeout: how long the system may take to finish everything after the faults.
        ack_loss_allowed_before: monotonic times of nats-server kills: a re-execution after a
            confirmed ack is allowed when that ack was confirmed at most 10 s before a kill.
        redispatch_allowed: steps may run as several attempts (deadlines re-dispatch them).
        check_data: check that each completed instance's context holds every step's output.
    """
    load = stack.load
    await load.settle()
    await load.resolve()
    books = Accounting(started=len(load.accepted), unresolved_starts=len(load.unresolved))
    accepted = set(load.accepted)
    began = time.monotonic()
    deadline = began + timeout
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=30) as client:
        while True:
            try:
                statuses = await _statuses(client, stack.headers, load.definition)
            except httpx.HTTPError:
                statuses = {}
            pending = [i for i in accepted if statuses.get(i) not in TERMINAL]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        books.seconds_to_drain = time.monotonic() - began
        books.lost = sorted(i for i in accepted if i not in statuses)
        books.unfinished = sorted(i for i in accepted if i in statuses and statuses[i] not in TERMINAL)
        for instance in accepted:
            if statuses.get(instance) in TERMINAL:
                books.terminal[statuses[instance]] += 1
                if statuses[instance] != expect:
                    books.wrong_outcome.append(f"{instance}: {statuses[instance]}")
        if check_data and expect == "completed":
            for instance in sorted(accepted)[:100]:  # a sample keeps this cheap under big loads
                body = (await client.get(f"/v1/instances/{instance}", headers=stack.headers)).json()
                if statuses.get(instance) == "completed" and not all(
                    f"s{i}" in body["data"] for i in range(3)
                ):
                    books.incomplete_data.append(instance)
    kills = (
        [ack_loss_allowed_before] if isinstance(ack_loss_allowed_before, float) else ack_loss_allowed_before
    )
    _check_ledger(stack.ledger, books, list(kills), redispatch_allowed)
    for _ in range(50):  # the relay marks rows sent right after publishing: allow it a moment
        books.outbox_unsent = await stack.outbox_unsent()
        books.results_pending = await _results_pending(stack.infra.nats.url)
        if not books.outbox_unsent and not books.results_pending:
            break
        await asyncio.sleep(0.2)
    return books


def _check_ledger(
    ledger: EffectLedger, books: Accounting, nats_kills: list[float], redispatch_allowed: bool
) -> None:
    books.executions = ledger.executions
    books.duplicated_effects = ledger.duplicated
    for key, runs in ledger.outcomes.items():
        for index, previous in enumerate(runs[:-1]):  # every execution that was followed by another
            confirmed = ledger.confirmed_at.get((*key, index), 0.0)
            if previous == "unconfirmed":
                books.excused_duplicates += 1
            elif any(kill - 10.0 <= confirmed <= kill for kill in nats_kills):
                books.ack_lost_duplicates += 1
            else:
                books.unexcused_duplicates.append(f"{key[0]}:{key[1]} {runs}")
    if not redispatch_allowed:
        books.steps_run_twice = [f"{i}/{s}" for (i, s), jobs in ledger.jobs_of_step.items() if len(jobs) > 1]


def assert_books(books: Accounting, *, label: str = "") -> None:
    print(f"accounting {label}: {books.summary()}")
    assert not books.problems(), books.problems()


async def cut_every(infra: Infra, stack: Stack, *, period: float, seconds: float, rate: float) -> int:
    """Cut every connection through both proxies every `period` seconds under a steady load."""
    load = asyncio.get_running_loop().create_task(stack.load.steady(rate=rate, seconds=seconds))
    cuts = 0
    for _ in range(int(seconds / period)):
        await asyncio.sleep(period)
        cuts += infra.pg_proxy.cut() + infra.nats_proxy.cut()
    await load
    return cuts
