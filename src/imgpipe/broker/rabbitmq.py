"""The :class:`~imgpipe.broker.protocol.Broker` on RabbitMQ, through aio-pika.

Robust connections, confirmed ``mandatory`` publishing re-sent until a
deadline, and consumers whose outcome :func:`imgpipe.broker.policy.decide`
settles; the topology is described in :mod:`imgpipe.broker.protocol`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions

from imgpipe.broker.policy import (
    Action,
    Decision,
    RetryPolicy,
    attempt_of,
    dead_letter_headers,
    decide,
    retry_headers,
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
from imgpipe.errors import TransientError, Unavailable
from imgpipe.runtime.logs import job_context

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
PUBLISH_DEADLINE = 15.0

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


def _channel_open(message: aio_pika.abc.AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except CONNECTION_ERRORS:
        return False


class _AmqpConsumer:
    def __init__(
        self,
        broker: AmqpBroker,
        queue: aio_pika.abc.AbstractQueue,
        handler: Handler,
        policy: RetryPolicy,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._names = topology(queue.name)
        self._handler = handler
        self._policy = policy
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if self._stopping.is_set():
            await self._settle(message.nack(requeue=True))
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            with job_context(job_of(message.body) or ""):
                await self._process(message)
        finally:
            self._inflight.discard(task)

    async def _settle(self, action: Awaitable[None]) -> bool:
        """Ack/nack/reject; False when the channel is gone (the broker redelivers)."""
        try:
            await action
            return True
        except CONNECTION_ERRORS as exc:
            log.warning("could not settle a message, the broker will deliver it again: %s",
                        type(exc).__name__)
            return False

    async def _process(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        queue = self._queue.name
        headers = dict(message.headers or {})
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            redelivered=bool(message.redelivered),
            headers=headers,
            attempt=attempt_of(headers),
            max_attempts=self._policy.max_attempts,
        )
        holds = 0
        while True:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                await self._handler(delivery)
            except asyncio.CancelledError:
                await self._settle(message.nack(requeue=True))
                MESSAGES.labels(queue, "returned").inc()
                raise
            except Exception as exc:  # noqa: BLE001 - the decision below handles it
                error = exc
            HANDLING.labels(queue).observe(time.perf_counter() - started)
            decision = decide(error, delivery.attempt, self._policy, holds=holds)
            if decision.action is not Action.HOLD:
                break
            MESSAGES.labels(queue, "held").inc()
            log.warning("backend unavailable, holding the message for %.1fs: %s",
                        decision.delay, decision.message,
                        extra={"reason": decision.reason, "message_id": message.message_id})
            if not _channel_open(message):
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), decision.delay)
            except TimeoutError:
                holds += 1
                continue
            await self._settle(message.nack(requeue=True))
            MESSAGES.labels(queue, "returned").inc()
            return
        await self._apply(message, delivery, decision)

    async def _apply(
        self,
        message: aio_pika.abc.AbstractIncomingMessage,
        delivery: Delivery,
        decision: Decision,
    ) -> None:
        queue = self._queue.name
        extra = {"message_id": message.message_id, "attempt": delivery.attempt,
                 "reason": decision.reason}
        if decision.action is Action.ACK:
            if await self._settle(message.ack()):
                MESSAGES.labels(queue, "acked").inc()
            return
        if decision.action is Action.RETRY:
            target = self._names.retry_queue(decision.delay)
            headers = retry_headers(delivery.headers, delivery.attempt + 1, decision)
            outcome = "retried"
            log.warning("attempt %d failed, retrying in %.1fs: %s", delivery.attempt,
                        decision.delay, decision.message, extra=extra)
        else:
            target = self._names.dead_letter_queue
            headers = dead_letter_headers(delivery.headers, delivery.attempt, queue, decision)
            outcome = "dead_lettered"
            log.error("message dead-lettered to %s: %s", target, decision.message, extra=extra)
        try:
            await self._broker.send_to_queue(target, message, headers)
        except TransientError as exc:
            log.warning("could not move the message to %s (%s); returning it to %s",
                        target, exc.message, queue, extra=extra)
            if decision.action is Action.DEAD_LETTER:
                await self._settle(message.reject(requeue=False))  # the queue's DLX keeps it
            else:
                await asyncio.sleep(RETRY_DELAY)
                await self._settle(message.nack(requeue=True))
            MESSAGES.labels(queue, outcome).inc()
            return
        if await self._settle(message.ack()):
            MESSAGES.labels(queue, outcome).inc()

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        if self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except CONNECTION_ERRORS:
                pass
            self._tag = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)


class AmqpBroker:
    """:class:`Broker` on RabbitMQ through aio-pika robust connections."""

    def __init__(self, url: str, *, name: str = "imgpipe",
                 publish_deadline: float = PUBLISH_DEADLINE) -> None:
        self._url = url
        self._name = name
        self._publish_deadline = publish_deadline
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._consumers: list[_AmqpConsumer] = []
        self._queues: set[str] = set()

    async def connect(self) -> None:
        """Connect once; raise :class:`Unavailable` when RabbitMQ does not answer.

        Once connected, the connection recovers on its own (channels,
        topology and consumers included) whenever it is lost.
        """
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self._url, client_properties={"connection_name": self._name},
                reconnect_interval=1, timeout=10,
            )
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"RabbitMQ is unreachable: {type(exc).__name__}",
                              reason="broker_unavailable") from exc
        self._publish_channel = await connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._connection = connection

    def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._publish_channel is None:
            raise Unavailable("not connected to RabbitMQ yet", reason="broker_unavailable")
        return self._publish_channel

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        if name not in self._exchanges:
            self._exchanges[name] = await self._channel().declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        return self._exchanges[name]

    async def declare_exchange(self, exchange: str) -> None:
        await self._exchange(exchange)

    async def _declare_queue(self, name: str, arguments: dict[str, Any]) -> None:
        """Declare a durable queue; an older one with other arguments is kept as it is."""
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed:
            log.warning("queue %s exists with other arguments; delete it to get retries and "
                        "dead-lettering", name)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange``, its durable work queue and dead-letter queue; return the queue."""
        ex = await self._exchange(exchange)
        name = queue or work_queue_name(exchange)
        names = topology(name)
        channel = self._channel()
        dlx = await channel.declare_exchange(
            names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(names.dead_letter_queue, durable=True)
        await dlq.bind(dlx)
        await self._declare_queue(name, {"x-dead-letter-exchange": names.dead_letter_exchange})
        q = await channel.declare_queue(name, durable=True, passive=True)
        await q.bind(ex, routing_key="#")
        self._queues.add(name)
        return name

    async def _declare_retry_queues(self, queue: str, policy: RetryPolicy) -> None:
        names = topology(queue)
        for delay in sorted(set(policy.delays)):
            await self._declare_queue(names.retry_queue(delay), {
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            })

    async def _publish(
        self, what: str, send: Callable[[], Awaitable[Any]],
    ) -> None:
        """Run ``send`` until the broker confirms it, or the deadline passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_deadline
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(send(), timeout=PUBLISH_TIMEOUT)
                return
            except aiormq.exceptions.PublishError as exc:
                raise TransientError(
                    f"no queue would receive the message for {what}", reason="unroutable"
                ) from exc
            except CONNECTION_ERRORS as exc:
                if loop.time() + delay > deadline:
                    raise Unavailable(
                        f"RabbitMQ did not confirm the message for {what}: {type(exc).__name__}",
                        reason="broker_unavailable",
                    ) from exc
                log.info("publish to %s not confirmed (%s), trying again", what,
                         type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

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
        """Publish persistently and wait for the broker's confirm.

        A publish the broker does not confirm (connection lost, broker
        restarting, negative confirm) is sent again until a deadline, then
        raises :class:`Unavailable`; a ``mandatory`` message that no queue
        would receive raises :class:`TransientError` (``unroutable``).
        """
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers or {}),
        )

        async def send() -> Any:
            ex = await self._exchange(exchange)
            return await ex.publish(message, routing_key=routing_key or "event",
                                    mandatory=mandatory)

        await self._publish(f"exchange {exchange!r}", send)

    async def send_to_queue(
        self, queue: str, original: aio_pika.abc.AbstractIncomingMessage, headers: dict[str, Any]
    ) -> None:
        """Publish a copy of ``original`` straight into ``queue`` with ``headers``."""
        message = aio_pika.Message(
            original.body,
            message_id=original.message_id,
            content_type=original.content_type or "application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )

        async def send() -> Any:
            return await self._channel().default_exchange.publish(
                message, routing_key=queue, mandatory=True
            )

        await self._publish(f"queue {queue!r}", send)

    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int, retry: RetryPolicy | None = None
    ) -> Consumer:
        """Consume ``queue`` with ``handler``, at most ``prefetch`` messages at a time."""
        assert self._connection is not None, "connect() first"
        policy = retry or RetryPolicy()
        await self._declare_retry_queues(queue, policy)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.declare_queue(queue, durable=True, passive=True)
        consumer = _AmqpConsumer(self, q, handler, policy)
        await consumer.start()
        self._consumers.append(consumer)
        self._queues.add(queue)
        return consumer

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each work queue and dead-letter queue this broker declared."""
        depths: dict[str, int] = {}
        if self._connection is None or self._connection.is_closed:
            return depths
        channel = await self._connection.channel()
        try:
            for queue in sorted(self._queues):
                for name in (queue, topology(queue).dead_letter_queue):
                    declared = await channel.declare_queue(name, durable=True, passive=True)
                    depths[name] = int(declared.declaration_result.message_count or 0)
        except CONNECTION_ERRORS:
            pass
        finally:
            if not channel.is_closed:
                await channel.close()
        return depths

    async def check(self) -> None:
        if self._connection is None or self._connection.is_closed:
            raise Unavailable("not connected to RabbitMQ", reason="broker_unavailable")
        if self._publish_channel is None or self._publish_channel.is_closed:
            raise Unavailable("RabbitMQ channel is closed", reason="broker_unavailable")
        transport = getattr(self._connection, "transport", None)
        if transport is None:
            raise Unavailable("reconnecting to RabbitMQ", reason="broker_unavailable")

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.stop(grace=0)
        self._consumers.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._publish_channel = None
