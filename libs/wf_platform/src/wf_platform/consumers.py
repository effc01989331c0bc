"""Durable JetStream pull consumers that apply messages in database transactions.

:class:`PullConsumer` binds a durable pull consumer (creating it, or updating an existing one to
the given settings), pulls continuously (:class:`wf_worker.pull.PullStream`: a message is handled as
soon as it arrives, never held back waiting for a batch to fill), and hands each message to a
handler, a bounded number at a time. :func:`settle` acks a message only after its handler's
transaction committed and naks it with a delay when the handler failed, so it comes back. Handlers
ack, drop and count what can never apply themselves (an undecodable body is ``term``\\ed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from wf_worker.pull import PullStream

__all__ = ["PullConsumer", "settle"]

logger = logging.getLogger("wf_platform.consumers")


class PullConsumer:
    """A durable pull consumer that hands each message to ``handle``, in batches of what has arrived.

    Messages of one batch are handled concurrently (at most ``concurrency`` at once; the database
    pool is the real limit). Handlers must not rely on the order within a batch. With
    ``handle_batch``, the whole fetched batch goes to it instead (to apply many in one transaction);
    it then settles every message itself.
    """

    def __init__(
        self,
        nc: NatsClient,
        /,
        *,
        stream: str,
        durable: str,
        filter_subjects: Sequence[str],
        handle: Callable[[Msg], Awaitable[None]],
        handle_batch: Callable[[list[Msg]], Awaitable[None]] | None = None,
        batch: int,
        ack_wait: float,
        concurrency: int = 8,
        pipeline: int = 1,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()  # pyright: ignore[reportUnknownMemberType]
        self.stream = stream
        self.durable = durable
        self.filter_subjects = list(filter_subjects)
        self.handle = handle
        self.handle_batch = handle_batch
        self.batch = batch
        self.ack_wait = ack_wait
        self.concurrency = concurrency
        self.pipeline = pipeline
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._subscription: PullStream | None = None

    def config(self) -> ConsumerConfig:
        """The consumer's settings: explicit acks, unlimited redelivery, the ack wait given."""
        filters: dict[str, Any] = (
            {"filter_subject": self.filter_subjects[0]}
            if len(self.filter_subjects) == 1
            else {"filter_subjects": self.filter_subjects}
        )
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(self.batch * 4, 1000),
            **filters,
        )

    async def subscribe(self) -> PullStream:
        """Create the consumer, or update an existing one to these settings, and start pulling.

        Updating in place means a changed setting (the ack wait, say) takes effect without an
        operator deleting the consumer.
        """
        await self.js.add_consumer(self.stream, self.config())  # pyright: ignore[reportUnknownMemberType]
        return await PullStream(self.nc, stream=self.stream, durable=self.durable, batch=self.batch).start()

    def start(self) -> None:
        """Run :meth:`run` in the background."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"consumer {self.durable}")

    async def stop(self) -> None:
        """Stop fetching and release the subscription."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            # Fetched but unhandled messages come back after the ack wait; unsubscribing now keeps
            # the connection's drain from waiting on them.
            with contextlib.suppress(Exception):
                await self._subscription.close()
            self._subscription = None

    async def _handle_batch(self, messages: list[Msg]) -> None:
        if self.handle_batch is not None:
            await self.handle_batch(messages)
            return
        semaphore = asyncio.Semaphore(self.concurrency)

        async def limited(message: Msg) -> None:
            async with semaphore:
                await self.handle(message)

        await asyncio.gather(*(limited(m) for m in messages))

    async def run(self) -> None:
        """Pull and handle until stopped; re-binds and retries after errors.

        Up to ``pipeline`` batches are handled at once: while one batch waits on the database, the
        next is already being applied (messages of one key in two batches are serialized by the
        database's row locks, not by this loop).
        """
        subscription: PullStream | None = None
        slots = asyncio.Semaphore(self.pipeline)
        running: set[asyncio.Task[None]] = set()

        async def handle(messages: list[Msg]) -> None:
            try:
                await self._handle_batch(messages)
            except Exception:
                # Unsettled messages come back after the ack wait.
                logger.exception("consumer %s: a batch failed", self.durable)
            finally:
                slots.release()

        try:
            while not self._stopping.is_set():
                try:
                    if subscription is None:
                        subscription = self._subscription = await self.subscribe()
                    await slots.acquire()
                    try:
                        messages = await subscription.next_batch(self.batch, timeout=1.0)
                    except BaseException:
                        slots.release()
                        raise
                    if not messages:
                        slots.release()
                        continue
                    task = asyncio.get_running_loop().create_task(handle(messages))
                    running.add(task)
                    task.add_done_callback(running.discard)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("consumer %s failed; retrying", self.durable)
                    if subscription is not None:
                        # Its inbox subscription would otherwise stay on the connection, one per failure.
                        with contextlib.suppress(Exception):
                            await subscription.close()
                    subscription = self._subscription = None
                    await asyncio.sleep(1.0)
        finally:
            for task in running:
                task.cancel()


async def settle(message: Msg, apply: Callable[[], Awaitable[None]], /, *, retry_delay: float = 1.0) -> None:
    """Ack after ``apply`` committed; nak with a delay when it failed (the message comes back)."""
    try:
        await apply()
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("applying a message on %s failed; it will be redelivered", message.subject)
        with contextlib.suppress(Exception):
            await message.nak(delay=retry_delay)
        return
    with contextlib.suppress(Exception):
        await message.ack()
