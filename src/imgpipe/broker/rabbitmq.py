"""The :class:`~imgpipe.broker.protocol.Broker` on RabbitMQ, through aio-pika.

Robust connections, confirmed ``mandatory`` publishing re-sent until a
deadline, and consumers whose outcome :func:`imgpipe.broker.policy.decide`
settles (the loop itself is :mod:`imgpipe.broker.consumer`, a queue's consumer
:mod:`imgpipe.broker.rabbitmq_consumer`); queue names come
from :mod:`imgpipe.broker.topology`. A dead-letter exchange per work queue keeps
what a consumer rejects when it cannot move a message itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions

from imgpipe.broker import rabbitmq_deadletters as deadletters
from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Consumer, DeadLetter, Handler, Migration
from imgpipe.broker.rabbitmq_consumer import CONNECTION_ERRORS, IDLE_RENEW, AmqpConsumer
from imgpipe.broker.rabbitmq_nodes import connect as connect_nodes
from imgpipe.broker.rabbitmq_queues import QueueShape, declare, migrate, queue_counts
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import TransientError, Unavailable

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
PUBLISH_DEADLINE = 15.0


class AmqpBroker:
    """:class:`Broker` on RabbitMQ through aio-pika robust connections."""

    def __init__(self, url: str, *, name: str = "imgpipe",
                 publish_deadline: float = PUBLISH_DEADLINE,
                 shape: QueueShape | None = None, idle_renew: float = IDLE_RENEW) -> None:
        self._url = url
        self._idle_renew = idle_renew
        self._name = name
        self._shape = shape or QueueShape()
        self._stages: dict[str, str] = {}
        self._publish_deadline = publish_deadline
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._consumers: list[AmqpConsumer] = []
        self._queues: set[str] = set()

    async def connect(self) -> None:
        """Connect once; raise :class:`Unavailable` when RabbitMQ does not answer.

        With several node URLs, the first that answers. Once connected, the
        connection recovers on its own (channels, topology and consumers
        included) whenever it is lost, on the next node that answers.
        """
        if self._connection is not None:
            return
        try:
            connection = await connect_nodes(self._url, name=self._name)
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

    def _open(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            raise Unavailable("not connected to RabbitMQ yet", reason="broker_unavailable")
        return self._connection

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange``, its durable work queue and dead-letter queue; return the queue.

        Raises :class:`ConfigError` (``queue_type_mismatch``) when one of them exists with
        another queue type than the configured one.
        """
        ex = await self._exchange(exchange)
        name = queue or work_queue_name(exchange)
        names = topology(name)
        channel = self._channel()
        await channel.declare_exchange(
            names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        for spec in (self._shape.dead_letter(name), self._shape.work(exchange, name)):
            await declare(self._open(), spec, self._shape.queue_type, stage=exchange)
            declared = await channel.declare_queue(spec.name, durable=True, passive=True)
            await declared.bind(spec.exchange or ex, routing_key=spec.routing_key)
        self._queues.add(name)
        self._stages[name] = exchange
        return name

    async def _declare_retry_queues(self, queue: str, policy: RetryPolicy) -> None:
        for delay in sorted(set(policy.delays)):
            await declare(self._open(), self._shape.retry(queue, delay), self._shape.queue_type,
                          stage=self._stages.get(queue))

    async def migrate_queues(self, exchange: str, delays: Sequence[float]) -> list[Migration]:
        """Give the stage's queues the configured type (:func:`rabbitmq_queues.migrate`)."""
        await self._exchange(exchange)
        await self._channel().declare_exchange(
            topology(work_queue_name(exchange)).dead_letter_exchange,
            aio_pika.ExchangeType.FANOUT, durable=True)
        specs = self._shape.stage(exchange, work_queue_name(exchange), delays)
        return await migrate(self._open(), self._shape, specs)

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
        policy = retry or RetryPolicy()
        await self._declare_retry_queues(queue, policy)
        consumer = AmqpConsumer(self._open(), queue, handler, policy, prefetch=prefetch,
                                send_to_queue=self.send_to_queue, renew_after=self._idle_renew)
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

    async def queue_depth(self, queue: str) -> int | None:
        counts = await queue_counts(self._open(), queue)
        return counts[0] if counts else None

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        return await deadletters.show(self._open(), queue, limit)

    async def replay_dead_letters(
        self, queue: str, limit: int, ids: Sequence[str] = ()
    ) -> list[DeadLetter]:
        return await deadletters.replay(self._open(), queue, limit, ids)

    async def purge_dead_letters(self, queue: str) -> int:
        return await deadletters.purge(self._open(), queue)

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
