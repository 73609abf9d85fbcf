"""Messaging over RabbitMQ (aio-pika): topology, confirmed publishing, consuming.

Services depend on the :class:`Broker` protocol; :class:`AmqpBroker` is the
RabbitMQ implementation. Delivery rules (DESIGN.md):

* exchanges and work queues are durable; messages are persistent;
* publishing waits for the broker's confirm, and ``mandatory`` publishes
  that no queue would receive raise instead of vanishing;
* a handler's outcome is explicit: returning acks the message, a
  :class:`~imgpipe.core.errors.PermanentError` rejects it (to the
  dead-letter exchange), any other exception returns it for a retry.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq.exceptions

from imgpipe.core.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
RETRY_DELAY = 1.0


def work_queue_name(exchange: str) -> str:
    """The durable queue that holds a stage's work, named after its exchange."""
    return f"imgpipe.{exchange}"


@dataclass(frozen=True)
class Delivery:
    """A message handed to a handler: its body and what the broker knows of it."""

    body: bytes
    message_id: str | None
    redelivered: bool
    headers: Mapping[str, Any] = field(default_factory=dict)


class Outcome(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    REJECT = "reject"


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer(Protocol):
    async def stop(self, grace: float) -> None:
        """Stop taking messages; wait up to ``grace`` seconds for handlers."""


class Broker(Protocol):
    """What services need of a message broker."""

    async def declare_exchange(self, exchange: str) -> None: ...

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str: ...

    async def publish(
        self,
        exchange: str,
        body: bytes,
        *,
        message_id: str,
        routing_key: str = "",
        mandatory: bool = True,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


def outcome_of(exc: BaseException | None) -> Outcome:
    if exc is None:
        return Outcome.ACK
    if isinstance(exc, PermanentError):
        return Outcome.REJECT
    return Outcome.RETRY


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


class _AmqpConsumer:
    def __init__(self, queue: aio_pika.abc.AbstractQueue, handler: Handler) -> None:
        self._queue = queue
        self._handler = handler
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if self._stopping:
            await message.nack(requeue=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self._process(message)
        finally:
            self._inflight.discard(task)

    async def _process(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            redelivered=bool(message.redelivered),
            headers=dict(message.headers or {}),
        )
        error: BaseException | None = None
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            await message.nack(requeue=True)
            raise
        except Exception as exc:  # noqa: BLE001 - the outcome decides
            error = exc
        outcome = outcome_of(error)
        if outcome is Outcome.ACK:
            await message.ack()
        elif outcome is Outcome.REJECT:
            log.warning("message rejected: %s", error, extra={"message_id": message.message_id})
            await message.reject(requeue=False)
        else:
            log.warning(
                "message returned for retry: %s", error, extra={"message_id": message.message_id}
            )
            await asyncio.sleep(RETRY_DELAY)
            await message.nack(requeue=True)

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except _CONNECTION_ERRORS:
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

    def __init__(self, url: str, *, name: str = "imgpipe") -> None:
        self._url = url
        self._name = name
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._consumers: list[_AmqpConsumer] = []
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        """Connect (retrying until the broker answers)."""
        delay = 0.5
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self._url, client_properties={"connection_name": self._name}
                )
                break
            except _CONNECTION_ERRORS as exc:
                log.warning("RabbitMQ unreachable, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._publish_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        if name not in self._exchanges:
            assert self._publish_channel is not None, "connect() first"
            self._exchanges[name] = await self._publish_channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        return self._exchanges[name]

    async def declare_exchange(self, exchange: str) -> None:
        await self._exchange(exchange)

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange`` and a durable queue bound to it; return the queue name."""
        ex = await self._exchange(exchange)
        assert self._publish_channel is not None
        name = queue or work_queue_name(exchange)
        q = await self._publish_channel.declare_queue(name, durable=True)
        await q.bind(ex, routing_key="#")
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
        """Publish persistently and wait for the broker's confirm.

        Raises :class:`TransientError` when the broker is unreachable, refuses
        the message, or (with ``mandatory``) no queue would receive it.
        """
        message = aio_pika.Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers or {}),
        )
        try:
            ex = await self._exchange(exchange)
            await asyncio.wait_for(
                ex.publish(message, routing_key=routing_key or "event", mandatory=mandatory),
                timeout=PUBLISH_TIMEOUT,
            )
        except aio_pika.exceptions.DeliveryError as exc:
            raise TransientError(
                f"RabbitMQ did not accept the message for exchange {exchange!r}: {exc}",
                reason="broker_refused",
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise TransientError(
                f"RabbitMQ is unavailable: {type(exc).__name__}", reason="broker_unavailable"
            ) from exc

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        assert self._connection is not None, "connect() first"
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.declare_queue(queue, durable=True, passive=False)
        consumer = _AmqpConsumer(q, handler)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer

    async def check(self) -> None:
        if self._connection is None or self._connection.is_closed:
            raise TransientError("not connected to RabbitMQ", reason="broker_unavailable")
        if self._publish_channel is None or self._publish_channel.is_closed:
            raise TransientError("RabbitMQ channel is closed", reason="broker_unavailable")

    async def close(self) -> None:
        for consumer in self._consumers:
            await consumer.stop(grace=0)
        self._consumers.clear()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
