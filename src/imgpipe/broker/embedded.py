"""An in-process message broker with RabbitMQ's semantics, kept on disk.

:class:`EmbeddedBroker` implements :class:`~imgpipe.broker.protocol.Broker`
for services that share one process (``imgpipe dev``). What the services rely
on holds as with RabbitMQ:

* topic exchanges, durable queues bound with patterns (``#``, ``*``);
* ``publish`` returns once the message is in the journal on disk (the
  confirm); ``mandatory`` publishes that no queue would receive raise;
* a message stays in the journal until its handler returns (ack); what
  becomes of it otherwise is :func:`imgpipe.broker.policy.decide`'s answer,
  as with RabbitMQ: hold it while a backend is unavailable, retry it after
  the policy's delay with its attempt number raised, or move it to the
  stage's dead-letter queue (``imgpipe.E.dlq``) with the ``x-imgpipe-*``
  headers saying why;
* ``prefetch`` bounds the handlers running at once per consumer; stopping a
  consumer returns the messages it had not finished;
* messages not acked when the process stops are delivered again, marked
  redelivered, when the broker opens the same directory again.

One process owns a broker directory at a time (a lock file says so); the
services of that process share it through :func:`open_core`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgpipe.broker.embedded_queues import (
    BrokerCore,
    MessageQueue,
    StoredMessage,
    open_core,
    release_core,
)
from imgpipe.broker.policy import (
    Action,
    Decision,
    RetryPolicy,
    attempt_of,
    decide,
)
from imgpipe.broker.protocol import (
    HANDLING,
    MESSAGES,
    RETRY_DELAY,
    Consumer,
    Delivery,
    Handler,
    job_of,
    topology,
    work_queue_name,
)
from imgpipe.errors import Unavailable
from imgpipe.runtime.logs import job_context

log = logging.getLogger(__name__)

class _EmbeddedConsumer:
    def __init__(self, core: BrokerCore, queue: MessageQueue, handler: Handler, prefetch: int,
                 policy: RetryPolicy) -> None:
        self._core = core
        self._queue = queue
        self._handler = handler
        self._policy = policy
        self._slots = asyncio.Semaphore(prefetch)
        self._inflight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"consume-{self._queue.name}")

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                message = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._process(message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _process(self, message: StoredMessage) -> None:
        name = self._queue.name
        try:
            with job_context(job_of(message.body) or ""):
                await self._core.delivered(message)
                decision, attempt = await self._handle(message)
                if decision is None:
                    self._queue.put(message, front=True)
                    MESSAGES.labels(name, "returned").inc()
                    return
                self._log(message, decision, attempt)
                await self._core.settle(message, decision, attempt)
                MESSAGES.labels(name, _OUTCOMES[decision.action]).inc()
        except asyncio.CancelledError:
            self._queue.put(message, front=True)
            MESSAGES.labels(name, "returned").inc()
            raise
        except Exception:
            log.exception("message could not be settled; it will be delivered again")
            self._core.requeue_later(message, RETRY_DELAY)
        finally:
            self._slots.release()

    async def _handle(self, message: StoredMessage) -> tuple[Decision | None, int]:
        """Run the handler (again while a backend is unavailable); None: stopped while held."""
        attempt = attempt_of(message.headers)
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            redelivered=message.deliveries > 1,
            headers=dict(message.headers),
            attempt=attempt,
            max_attempts=self._policy.max_attempts,
        )
        holds = 0
        while True:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - the decision below handles it
                error = exc
            HANDLING.labels(self._queue.name).observe(time.perf_counter() - started)
            decision = decide(error, attempt, self._policy, holds=holds)
            if decision.action is not Action.HOLD:
                return decision, attempt
            MESSAGES.labels(self._queue.name, "held").inc()
            log.warning("backend unavailable, holding the message for %.1fs: %s",
                        decision.delay, decision.message,
                        extra={"reason": decision.reason, "message_id": message.message_id})
            try:
                await asyncio.wait_for(self._stopping.wait(), decision.delay)
            except TimeoutError:
                holds += 1
                continue
            return None, attempt

    def _log(self, message: StoredMessage, decision: Decision, attempt: int) -> None:
        extra = {"message_id": message.message_id, "attempt": attempt, "reason": decision.reason}
        if decision.action is Action.RETRY:
            log.warning("attempt %d failed, retrying in %.1fs: %s", attempt, decision.delay,
                        decision.message, extra=extra)
        elif decision.action is Action.DEAD_LETTER:
            log.error("message dead-lettered to %s: %s",
                      topology(self._queue.name).dead_letter_queue, decision.message, extra=extra)

    async def stop(self, grace: float) -> None:
        """Stop taking messages; after ``grace`` seconds, return unfinished ones."""
        self._stopping.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


_OUTCOMES = {Action.ACK: "acked", Action.RETRY: "retried", Action.DEAD_LETTER: "dead_lettered"}


class EmbeddedBroker:
    """:class:`~imgpipe.broker.protocol.Broker` kept in a local directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._core: BrokerCore | None = None
        self._consumers: list[_EmbeddedConsumer] = []
        self._queues: set[str] = set()

    async def connect(self) -> None:
        """Open the broker directory (shared with this process's other handles); idempotent."""
        if self._core is None:
            self._core = await open_core(self.directory)

    def _open_core(self) -> BrokerCore:
        if self._core is None:
            raise Unavailable("the embedded broker is not open", reason="broker_unavailable")
        return self._core

    async def declare_exchange(self, exchange: str) -> None:
        await self._open_core().declare_exchange(exchange)

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange``, its durable work queue and dead-letter queue; return the queue."""
        name = queue or work_queue_name(exchange)
        core = self._open_core()
        await core.declare_queue(topology(name).dead_letter_queue)
        await core.bind(exchange, name, "#")
        self._queues.add(name)
        return name

    async def publish(
        self,
        exchange: str,
        body: bytes,
        *,
        message_id: str,
        routing_key: str = "",
        mandatory: bool = True,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the message durably in the queues it routes to (the confirm).

        A ``mandatory`` message that no queue would receive raises
        :class:`TransientError` (``unroutable``), as with RabbitMQ.
        """
        core = self._open_core()
        try:
            await core.publish(exchange, routing_key or "event", body, message_id,
                               headers or {}, mandatory)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            raise Unavailable(f"the embedded broker could not store the message: {exc}",
                              reason="broker_unavailable") from exc

    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int, retry: RetryPolicy | None = None
    ) -> Consumer:
        """Consume ``queue`` with ``handler``, at most ``prefetch`` messages at a time."""
        core = self._open_core()
        consumer = _EmbeddedConsumer(core, await core.declare_queue(queue), handler, prefetch,
                                     retry or RetryPolicy())
        consumer.start()
        self._consumers.append(consumer)
        self._queues.add(queue)
        return consumer

    def counts(self, queue: str) -> dict[str, int]:
        """Messages of ``queue``: ready, being handled, and in its dead-letter queue."""
        queues = self._open_core().queues
        q, dlq = queues.get(queue), queues.get(topology(queue).dead_letter_queue)
        return {
            "ready": len(q.ready) if q else 0,
            "unacked": len(q.unacked) if q else 0,
            "dead": len(dlq.ready) + len(dlq.unacked) if dlq else 0,
        }

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each work queue and dead-letter queue this handle uses."""
        queues = self._open_core().queues
        depths = {}
        for queue in sorted(self._queues):
            for name in (queue, topology(queue).dead_letter_queue):
                q = queues.get(name)
                depths[name] = len(q.ready) + len(q.unacked) if q else 0
        return depths

    async def check(self) -> None:
        self._open_core()

    async def close(self) -> None:
        """Stop this handle's consumers (returning their messages) and release the broker."""
        for consumer in self._consumers:
            await consumer.stop(grace=0)
        self._consumers.clear()
        if self._core is not None:
            core, self._core = self._core, None
            await release_core(core)
