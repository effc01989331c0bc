"""NATS: the orchestrator's task messages (``wf.tasks.<tenant>.created|cancelled|escalated``).

One durable pull consumer on ``WF_TASKS`` with three filter subjects (NATS 2.10+). The orchestrator
consumes ``wf.tasks.*.completed`` from the same work-queue stream; the filters do not overlap, as a
work-queue stream requires.

Settlement, decided once here:

- applied, or a duplicate (redelivery), or a tombstoned task: ack after the transaction committed;
- the database failed: ``nak`` with a delay, the message comes back;
- an undecodable body or subject: ``term`` (it can never apply), counted;
- the body's tenant differs from the subject's: ack and drop, counted (never trust one over the other);
- an escalation of a task not yet here: ``nak`` with a delay a few times (it may have overtaken its
  ``created``), then dropped.

A message for a tenant the inbox has never seen provisions that tenant's schema first: tasks are how
a tenant's first data reaches the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from task_inbox.metrics import InboxMetrics
from task_inbox.services import Outcome, TaskIntake
from wf_platform.consumers import PullConsumer
from wf_platform.db import TenantDatabase
from wf_platform.logs import tenant_var
from wf_platform.telemetry import consumer_span
from wf_platform.tenancy import TenantId, is_valid_tenant_id
from workflow_core.messages import TaskCancelledMessage, TaskCreatedMessage, TaskEscalatedMessage
from workflow_core.subjects import TASKS_STREAM

__all__ = ["TASK_EVENTS", "PullConsumer", "TaskMessageHandler", "task_filter_subjects"]

logger = logging.getLogger("task_inbox.consumers")

TASK_EVENTS = ("created", "cancelled", "escalated")
_BODY_TYPES: dict[str, type[Any]] = {
    "created": TaskCreatedMessage,
    "cancelled": TaskCancelledMessage,
    "escalated": TaskEscalatedMessage,
}
_UNKNOWN_RETRIES = 10


def task_filter_subjects(tenant: str = "*") -> list[str]:
    """The consumer's filters: every tenant (``*``) or one."""
    return [f"wf.tasks.{tenant}.{event}" for event in TASK_EVENTS]


class _TaskNotYetHereError(Exception):
    """The message refers to a task that has not arrived yet."""


class TaskMessageHandler:
    """Decodes one task message, checks its tenant, and applies it through :class:`TaskIntake`."""

    def __init__(
        self,
        *,
        tenant_db: Callable[[TenantId], TenantDatabase],
        provision: Callable[[TenantId], Awaitable[object]],
        metrics: InboxMetrics,
    ) -> None:
        self.tenant_db = tenant_db
        self.provision = provision
        self.metrics = metrics

    def _drop(self, event: str, reason: str) -> None:
        self.metrics.messages.labels(event=event, outcome=reason).inc()

    async def __call__(self, message: Msg) -> None:
        parts = message.subject.split(".")
        event = parts[3] if len(parts) == 4 else "?"
        body_type = _BODY_TYPES.get(event)
        if len(parts) != 4 or body_type is None or not is_valid_tenant_id(parts[2]):
            self._drop("unknown", "bad_subject")
            await message.term()
            return
        tenant = TenantId(parts[2])
        try:
            body: Any = msgspec.json.decode(message.data, type=body_type)
            uuid.UUID(body.task_id)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            self._drop(event, "undecodable")
            await message.term()
            return
        if body.tenant != tenant:
            logger.warning("task message on %s names tenant %r; dropped", message.subject, body.tenant)
            self._drop(event, "tenant_mismatch")
            await message.ack()
            return
        await self._settle(message, event, tenant, body)

    async def _settle(self, message: Msg, event: str, tenant: TenantId, body: Any) -> None:
        started = time.perf_counter()
        token = tenant_var.set(tenant)
        try:
            with consumer_span(
                f"task {event}",
                dict(message.headers or {}),
                **{"wf.tenant": tenant, "wf.task_id": body.task_id},
            ):
                outcome = await self._apply(event, tenant, body)
        except asyncio.CancelledError:
            raise
        except _TaskNotYetHereError:
            delivered = message.metadata.num_delivered or 1
            if delivered >= _UNKNOWN_RETRIES:
                self._drop(event, "unknown_task")
                with contextlib.suppress(Exception):
                    await message.ack()
            else:
                with contextlib.suppress(Exception):
                    await message.nak(delay=min(0.5 * delivered, 5.0))
            return
        except Exception:
            logger.exception("applying %s failed; it will be redelivered", message.subject)
            with contextlib.suppress(Exception):
                await message.nak(delay=1.0)
            return
        finally:
            tenant_var.reset(token)
        self.metrics.messages.labels(event=event, outcome=outcome).inc()
        self.metrics.consume_seconds.labels(event=event).observe(time.perf_counter() - started)
        with contextlib.suppress(Exception):
            await message.ack()

    async def _apply(self, event: str, tenant: TenantId, body: Any) -> Outcome:
        await self.provision(tenant)
        intake = TaskIntake(self.tenant_db(tenant))
        if event == "created":
            return await intake.created(body)
        if event == "cancelled":
            return await intake.cancelled(body)
        outcome = await intake.escalated(body)
        if outcome == "unknown":
            raise _TaskNotYetHereError
        return outcome


def consumer_for(
    nc: NatsClient,
    handler: TaskMessageHandler,
    /,
    *,
    durable: str,
    tenant: str,
    batch: int,
    ack_wait: float,
) -> PullConsumer:
    """The inbox's consumer on ``WF_TASKS``."""
    return PullConsumer(
        nc,
        stream=TASKS_STREAM,
        durable=durable,
        filter_subjects=task_filter_subjects(tenant),
        handle=handler,
        batch=batch,
        ack_wait=ack_wait,
    )
