"""A consumer of one RabbitMQ queue: settling on aio-pika, and renewing an idle subscription.

:class:`AmqpConsumer` feeds the shared loop (:mod:`imgpipe.broker.consumer`)
with :class:`AmqpMessage`\\ s: an ack or nack goes to the message's channel; a
retry or dead letter is first a confirmed copy in the target queue, then an ack.

**Renewing an idle subscription.** A quorum queue counts a message as
delivered to a consumer when its leader has applied the delivery, before the
message reaches the consumer. When the leader dies in between, the new leader
still counts the message as delivered, and the channel notices a lost
delivery only when a later one arrives; with its prefetch used up by lost
deliveries, none ever does (the likely cause of a cluster test on RabbitMQ
3.10.8 where four jobs, one runner's prefetch, never reached it). So a consumer that has had no
message for ``renew_after`` seconds and holds none subscribes again on a new
channel and closes the old one: closing a channel returns everything counted
as delivered on it to the queue. On a healthy idle queue this costs a few
frames now and then and returns nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions
from prometheus_client import Counter

from imgpipe.broker.consumer import RETRY_DELAY, ConsumerLoop
from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Handler
from imgpipe.broker.topology import topology
from imgpipe.errors import TransientError

log = logging.getLogger(__name__)

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)

#: Seconds without a message after which an idle consumer subscribes again (``AMQP_IDLE_RENEW``).
IDLE_RENEW = 30.0

RENEWALS = Counter("imgpipe_consumer_renewals", "Idle consumers that subscribed again on a "
                   "new channel (returning deliveries that never arrived)", ["queue"])
RECOVERED = Counter("imgpipe_consumer_recovered", "Redelivered messages a consumer received "
                    "within RECOVERY_WINDOW seconds of subscribing again (likely deliveries "
                    "that never arrived)", ["queue"])
#: Seconds after a renewal in which a redelivered message counts as one that came back by it.
RECOVERY_WINDOW = 10.0

#: Publishes a copy of a message straight into a queue, with new headers, confirmed.
SendToQueue = Callable[[str, aio_pika.abc.AbstractIncomingMessage, dict[str, Any]],
                       Awaitable[None]]


def _channel_open(message: aio_pika.abc.AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except CONNECTION_ERRORS:
        return False


async def _settle(action: Awaitable[None]) -> bool:
    """Ack/nack/reject; False when the channel is gone (the broker redelivers)."""
    try:
        await action
        return True
    except CONNECTION_ERRORS as exc:
        log.warning("could not settle a message, the broker will deliver it again: %s",
                    type(exc).__name__)
        return False


class AmqpMessage:
    """A :class:`~imgpipe.broker.consumer.Received` on RabbitMQ: acks and nacks on its
    channel; a retry or dead letter is a confirmed copy in the target queue, then an ack."""

    def __init__(self, send_to_queue: SendToQueue,
                 message: aio_pika.abc.AbstractIncomingMessage, queue: str) -> None:
        self._send_to_queue = send_to_queue
        self._message = message
        self._names = topology(queue)
        self.body = message.body
        self.message_id = message.message_id
        self.redelivered = bool(message.redelivered)
        self.headers: Mapping[str, Any] = dict(message.headers or {})

    def settleable(self) -> bool:
        return _channel_open(self._message)

    async def ack(self) -> bool:
        return await _settle(self._message.ack())

    async def requeue(self) -> None:
        await _settle(self._message.nack(requeue=True))

    async def retry(self, headers: dict[str, Any], delay: float) -> bool:
        return await self._move(self._names.retry_queue(delay), headers, dead=False)

    async def dead_letter(self, headers: dict[str, Any]) -> bool:
        return await self._move(self._names.dead_letter_queue, headers, dead=True)

    async def _move(self, target: str, headers: dict[str, Any], *, dead: bool) -> bool:
        try:
            await self._send_to_queue(target, self._message, headers)
        except TransientError as exc:
            log.warning("could not move the message to %s (%s); returning it to %s",
                        target, exc.message, self._names.queue,
                        extra={"message_id": self.message_id})
            if dead:
                await _settle(self._message.reject(requeue=False))  # the queue's DLX keeps it
            else:
                await asyncio.sleep(RETRY_DELAY)
                await _settle(self._message.nack(requeue=True))
            return True
        return await self.ack()


class AmqpConsumer(ConsumerLoop):
    """Consumes one queue on a channel of its own, at most ``prefetch`` messages at a time."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, queue: str,
                 handler: Handler, policy: RetryPolicy, *, prefetch: int,
                 send_to_queue: SendToQueue, renew_after: float = IDLE_RENEW) -> None:
        super().__init__(queue, handler, policy)
        self._connection = connection
        self._prefetch = prefetch
        self._send_to_queue = send_to_queue
        self._renew_after = renew_after
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag: str | None = None
        self._last_message = 0.0
        self._renewed = False  # subscribed again since the last message
        self._renewed_at: float | None = None  # when this consumer last subscribed again
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._subscribe()
        if self._renew_after > 0:
            self._watch = asyncio.create_task(self._renew_when_idle())

    async def _subscribe(self) -> None:
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.declare_queue(self.queue, durable=True, passive=True)
            self._tag = await queue.consume(self._on_message)
        except BaseException:
            if not channel.is_closed:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await asyncio.shield(channel.close())
            raise
        self._channel, self._queue = channel, queue
        self._last_message = asyncio.get_running_loop().time()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        loop = asyncio.get_running_loop()
        self._last_message = loop.time()
        if (message.redelivered and self._renewed_at is not None
                and self._last_message - self._renewed_at <= RECOVERY_WINDOW):
            RECOVERED.labels(self.queue).inc()
            log.warning("a message came back after subscribing again to %s (a delivery that "
                        "never arrived)", self.queue, extra={"message_id": message.message_id})
        self._renewed = False
        try:
            await self.process(AmqpMessage(self._send_to_queue, message, self.queue))
        finally:
            self._last_message = loop.time()

    def _idle_for(self) -> float:
        if self._inflight:
            return 0.0
        return asyncio.get_running_loop().time() - self._last_message

    async def _renew_when_idle(self) -> None:
        while not self._stopping.is_set():
            wait = max(0.1, self._renew_after - self._idle_for())
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            if self._idle_for() < self._renew_after or self._connection.is_closed:
                continue
            try:
                await self.renew()
            except Exception as exc:  # noqa: BLE001 - the old subscription stays; try again later
                log.info("could not subscribe again to %s: %s", self.queue, type(exc).__name__)
                self._last_message = asyncio.get_running_loop().time()

    async def renew(self) -> None:
        """Subscribe again on a new channel, then close the old one (returning to the
        queue whatever was counted as delivered on it)."""
        old_channel, old_queue, old_tag = self._channel, self._queue, self._tag
        await self._subscribe()
        # Before the old channel closes: what it returns may arrive on the new one at once.
        quiet, self._renewed = self._renewed, True
        self._renewed_at = asyncio.get_running_loop().time()
        if old_queue is not None and old_tag is not None:
            try:
                await old_queue.cancel(old_tag)
            except CONNECTION_ERRORS:
                pass
        if old_channel is not None and not old_channel.is_closed:
            try:
                await old_channel.close()
            except CONNECTION_ERRORS:
                pass
        RENEWALS.labels(self.queue).inc()
        # Once per idle stretch at info; the later renewals of the same stretch at debug.
        log.log(logging.DEBUG if quiet else logging.INFO,
                "idle for %.0fs, subscribed again to %s on a new channel", self._renew_after,
                self.queue)

    async def stop_taking(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except CONNECTION_ERRORS:
                pass
            self._tag = None
