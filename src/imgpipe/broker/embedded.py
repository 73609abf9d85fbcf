"""An in-process message broker with RabbitMQ's semantics, kept on disk.

:class:`EmbeddedBroker` implements :class:`~imgpipe.broker.protocol.Broker`
for services that share one process (``imgpipe dev``). What the services rely
on holds as with RabbitMQ:

* topic exchanges, durable queues bound with patterns (``#``, ``*``);
* ``publish`` returns once the message is in the journal on disk (the
  confirm); ``mandatory`` publishes that no queue would receive raise;
* a message stays in the journal until its handler returns (ack); what
  becomes of it otherwise is decided by the consumer loop all brokers share
  (:mod:`imgpipe.broker.consumer`): a retry waits in memory for its delay
  (in the journal with its raised attempt number), a dead letter moves to
  the stage's dead-letter queue (``imgpipe.E.dlq``);
* ``prefetch`` bounds the handlers running at once per consumer; stopping a
  consumer returns the messages it had not finished;
* messages not acked when the process stops are delivered again, marked
  redelivered, when the broker opens the same directory again.

One process owns a broker directory at a time (a lock file says so); the
services of that process share it through :func:`open_core`. ``imgpipe dlq``
therefore works on an embedded broker whose ``imgpipe dev`` is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from imgpipe.broker.consumer import RETRY_DELAY, ConsumerLoop
from imgpipe.broker.embedded_queues import (
    BrokerCore,
    MessageQueue,
    StoredMessage,
    open_core,
    release_core,
)
from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Consumer, DeadLetter, Handler, Migration
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import Unavailable

log = logging.getLogger(__name__)

class _StoredDelivery:
    """A :class:`~imgpipe.broker.consumer.Received` of the embedded broker: settling it
    rewrites its row in the journal; one that cannot be settled is delivered again."""

    def __init__(self, core: BrokerCore, queue: MessageQueue, message: StoredMessage) -> None:
        self._core = core
        self._queue = queue
        self._message = message
        self.body = message.body
        self.message_id = message.message_id
        self.redelivered = message.deliveries > 1
        self.headers: Mapping[str, Any] = dict(message.headers)

    def settleable(self) -> bool:
        return True

    async def ack(self) -> bool:
        return await self._settled(self._core.ack(self._message))

    async def requeue(self) -> None:
        self._queue.put(self._message, front=True)

    async def retry(self, headers: dict[str, Any], delay: float) -> bool:
        return await self._settled(self._core.move(self._message, self._queue.name, headers,
                                                   delay=delay))

    async def dead_letter(self, headers: dict[str, Any]) -> bool:
        dead = topology(self._queue.name).dead_letter_queue
        return await self._settled(self._core.move(self._message, dead, headers))

    async def _settled(self, settling: Awaitable[None]) -> bool:
        try:
            await settling
            return True
        except Exception:
            log.exception("message could not be settled; it will be delivered again")
            self._core.requeue_later(self._message, RETRY_DELAY)
            return False


class _EmbeddedConsumer(ConsumerLoop):
    def __init__(self, core: BrokerCore, queue: MessageQueue, handler: Handler, prefetch: int,
                 policy: RetryPolicy) -> None:
        super().__init__(queue.name, handler, policy)
        self._core = core
        self._queue = queue
        self._slots = asyncio.Semaphore(prefetch)
        self._dispatcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"consume-{self.queue}")

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                message = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._deliver(message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, message: StoredMessage) -> None:
        try:
            try:
                await self._core.delivered(message)
            except asyncio.CancelledError:
                self._queue.put(message, front=True)
                raise
            except Exception:
                log.exception("message could not be delivered; it will be delivered again")
                self._core.requeue_later(message, RETRY_DELAY)
                return
            await self.process(_StoredDelivery(self._core, self._queue, message))
        finally:
            self._slots.release()

    async def stop_taking(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None


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

    async def queue_depth(self, queue: str) -> int | None:
        q = self._open_core().queues.get(queue)
        return len(q.ready) + len(q.unacked) if q else None

    def _dead(self, queue: str) -> MessageQueue:
        dead = self._open_core().queues.get(topology(queue).dead_letter_queue)
        if dead is None:
            raise Unavailable(f"no dead-letter queue {topology(queue).dead_letter_queue}",
                              reason="no_such_queue")
        return dead

    @staticmethod
    def _letter(message: StoredMessage) -> DeadLetter:
        return DeadLetter.of(message.body, message.message_id, message.headers)

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        return [self._letter(m) for m in list(self._dead(queue).ready)[:limit]]

    async def replay_dead_letters(
        self, queue: str, limit: int, ids: Sequence[str] = ()
    ) -> list[DeadLetter]:
        core, dead = self._open_core(), self._dead(queue)
        chosen = [m for m in dead.ready if self._letter(m).chosen(ids)][:limit]
        letters = [self._letter(m) for m in chosen]
        await core.replay(dead, chosen, queue)
        return letters

    async def purge_dead_letters(self, queue: str) -> int:
        return await self._open_core().purge(self._dead(queue))

    async def migrate_queues(self, exchange: str, delays: Sequence[float]) -> list[Migration]:
        """Nothing to do: the embedded broker has one kind of queue."""
        return []

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
