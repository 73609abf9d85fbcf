"""A stage's RabbitMQ queues: their arguments by queue type, and moving them to another type.

``AMQP_QUEUE_TYPE=quorum`` (the default) makes every queue imgpipe declares a
quorum queue: replicated with Raft over the cluster's nodes, so that a stage's
work, retries and dead letters survive the loss of a node. Dead-lettering is
the quorum way: ``x-dead-letter-strategy: at-least-once`` (a dead-lettered or
expired message leaves its queue only once the target queue has confirmed it;
RabbitMQ requires ``x-overflow: reject-publish`` with it), and the work queue
has a delivery limit (``x-delivery-limit``, ``AMQP_DELIVERY_LIMIT``): a message
returned that many times without being settled, e.g. because it crashes every
runner that takes it, goes to the dead-letter queue. ``classic`` keeps classic
queues for brokers that cannot do quorum queues.

A queue's type cannot change in place. Declaring a queue that exists with the
other type raises :class:`~imgpipe.errors.ConfigError` (``queue_type_mismatch``)
naming the queue and the command that migrates it, ``imgpipe queues migrate``,
which is :func:`migrate`: with the stage's consumers stopped, every wrong-typed
queue's messages move to a holding queue (``<queue>.migrating``), the queue is
declared again with the right type, and the messages move back. Each message
leaves a queue only after the target queue has confirmed its copy, so a crash
part-way loses none (it may copy one twice); running the command again
finishes an interrupted migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from imgpipe.broker.protocol import Migration
from imgpipe.broker.topology import topology
from imgpipe.errors import ConfigError

log = logging.getLogger(__name__)

QUEUE_TYPES = ("quorum", "classic")
DELIVERY_LIMIT = 20
#: Header quorum queues add to a redelivered message; not copied when migrating.
DELIVERY_COUNT = "x-delivery-count"


@dataclass(frozen=True)
class QueueSpec:
    """A queue as imgpipe declares it: name, arguments, the exchange feeding it, and
    the arguments it would have as a queue of the other type (to recognise one)."""

    name: str
    arguments: dict[str, Any]
    exchange: str | None = None
    routing_key: str = "#"
    other_type_arguments: dict[str, Any] = field(default_factory=dict)


Arguments = Callable[["QueueShape"], dict[str, Any]]


@dataclass(frozen=True)
class QueueShape:
    """The arguments of a stage's queues for one queue type."""

    queue_type: str = "quorum"
    delivery_limit: int = DELIVERY_LIMIT

    def other(self) -> QueueShape:
        return replace(self, queue_type="classic" if self.queue_type == "quorum" else "quorum")

    def _typed(self, arguments: dict[str, Any], *, dead_letters: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"x-queue-type": self.queue_type, **arguments}
        if self.queue_type == "quorum" and dead_letters:
            out |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return out

    def _spec(self, name: str, arguments: Arguments, exchange: str | None = None,
              routing_key: str = "#") -> QueueSpec:
        return QueueSpec(name, arguments(self), exchange, routing_key, arguments(self.other()))

    def work(self, exchange: str, queue: str) -> QueueSpec:
        def arguments(shape: QueueShape) -> dict[str, Any]:
            out: dict[str, Any] = {"x-dead-letter-exchange": topology(queue).dead_letter_exchange}
            if shape.queue_type == "quorum":
                out["x-delivery-limit"] = shape.delivery_limit
            return shape._typed(out, dead_letters=True)

        return self._spec(queue, arguments, exchange)

    def dead_letter(self, queue: str) -> QueueSpec:
        names = topology(queue)
        return self._spec(names.dead_letter_queue,
                          lambda shape: shape._typed({}, dead_letters=False),
                          names.dead_letter_exchange, "")

    def retry(self, queue: str, delay: float) -> QueueSpec:
        return self._spec(topology(queue).retry_queue(delay), lambda shape: shape._typed({
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }, dead_letters=True))

    def holding(self, queue: str) -> QueueSpec:
        return self._spec(f"{queue}.migrating", lambda shape: shape._typed({}, dead_letters=False))

    def stage(self, exchange: str, queue: str, delays: Sequence[float]) -> list[QueueSpec]:
        """A stage's queues in the order :func:`migrate` drains them: retry queues
        (they expire into the work queue), the work queue, the dead-letter queue."""
        return [*(self.retry(queue, d) for d in sorted(set(delays))),
                self.work(exchange, queue), self.dead_letter(queue)]


def is_type_mismatch(error: aiormq.exceptions.ChannelPreconditionFailed) -> bool:
    return "'x-queue-type'" in str(error)


def mismatch_error(queue: str, queue_type: str, exchange: str | None) -> ConfigError:
    command = "imgpipe queues migrate" + (f" --exchange {exchange}" if exchange else "")
    return ConfigError(
        f"queue {queue} exists on RabbitMQ with another type than AMQP_QUEUE_TYPE={queue_type}; "
        f"stop the services that use it and run `{command}` to move its messages into a "
        f"{queue_type} queue, or set AMQP_QUEUE_TYPE to the type it has",
        reason="queue_type_mismatch", queue=queue, command=command,
    )


async def declare(connection: aio_pika.abc.AbstractConnection, spec: QueueSpec,
                  queue_type: str, *, stage: str | None = None) -> bool:
    """Declare ``spec``; False when it exists with other arguments than the type's.

    A queue of the other type raises :func:`mismatch_error` (``stage``: the exchange
    to name in the command); other differing arguments are kept and logged.
    """
    channel = await connection.channel()
    try:
        await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        return True
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        # RabbitMQ names the first differing argument, often not x-queue-type
        if is_type_mismatch(exc) or await _accepts(connection, spec.name,
                                                   spec.other_type_arguments):
            raise mismatch_error(spec.name, queue_type, stage) from exc
        log.warning("queue %s exists with other arguments (%s); keeping it as it is",
                    spec.name, exc.args[0] if exc.args else exc)
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def _accepts(connection: aio_pika.abc.AbstractConnection, name: str,
                   arguments: dict[str, Any]) -> bool:
    """Whether queue ``name`` exists with exactly ``arguments``."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
        return True
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


async def queue_counts(connection: aio_pika.abc.AbstractConnection, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of queue ``name``, or None when there is none."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        if not channel.is_closed:
            await channel.close()


def _copy(message: aio_pika.abc.AbstractIncomingMessage) -> aio_pika.Message:
    headers = {k: v for k, v in (message.headers or {}).items() if k != DELIVERY_COUNT}
    return aio_pika.Message(
        message.body, headers=headers, content_type=message.content_type,
        content_encoding=message.content_encoding, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority, correlation_id=message.correlation_id,
        reply_to=message.reply_to, message_id=message.message_id,
        timestamp=message.timestamp, type=message.type, app_id=message.app_id,
    )


async def move(connection: aio_pika.abc.AbstractConnection, source: str, target: str) -> int:
    """Move every message of ``source`` to ``target``; each leaves ``source`` only
    once ``target`` has confirmed its copy. How many moved."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    moved = 0
    try:
        queue = await channel.declare_queue(source, passive=True)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            await channel.default_exchange.publish(_copy(message), routing_key=target,
                                                   mandatory=True)
            await message.ack()
            moved += 1
    finally:
        if not channel.is_closed:
            await channel.close()
    return moved


async def _bind(connection: aio_pika.abc.AbstractConnection, spec: QueueSpec, *,
                unbind: bool = False) -> None:
    """Bind ``spec``'s queue to the exchange that feeds it (or undo that)."""
    if spec.exchange is None:
        return
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(spec.name, passive=True)
        if unbind:
            await queue.unbind(spec.exchange, routing_key=spec.routing_key)
        else:
            await queue.bind(spec.exchange, routing_key=spec.routing_key)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _delete_empty(connection: aio_pika.abc.AbstractConnection, name: str) -> None:
    """Delete queue ``name``, which must be empty (quorum queues have no if-empty delete;
    nothing routes to it any more)."""
    found = await queue_counts(connection, name)
    if found is None:
        return
    if found[0]:
        raise ConfigError(
            f"queue {name} received {found[0]} message(s) while being migrated; stop what "
            "publishes to it and run the command again", reason="queue_in_use", queue=name)
    channel = await connection.channel()
    try:
        await channel.queue_delete(name)
    finally:
        if not channel.is_closed:
            await channel.close()


async def migrate(connection: aio_pika.abc.AbstractConnection, shape: QueueShape,
                  specs: Sequence[QueueSpec]) -> list[Migration]:
    """Give every queue of ``specs`` ``shape``'s type, keeping its messages.

    Refuses (ConfigError) while a queue to migrate has consumers. Queues already
    of the right type are left alone (an interrupted migration's held messages
    go back into them).
    """
    wrong: list[QueueSpec] = []
    for spec in specs:
        try:
            await declare(connection, spec, shape.queue_type)
        except ConfigError:
            wrong.append(spec)
    for spec in wrong:
        found = await queue_counts(connection, spec.name)
        if found is not None and found[1]:
            raise ConfigError(
                f"queue {spec.name} has {found[1]} consumer(s); stop the services that use it "
                "before migrating it", reason="queue_in_use", queue=spec.name)
    done = {spec.name: Migration(spec.name) for spec in specs}
    for spec in wrong:  # in order: nothing expires into a queue already drained
        await _bind(connection, spec, unbind=True)  # publishers now get "unroutable"
        holding = shape.holding(spec.name)
        await declare(connection, holding, shape.queue_type)
        moved = await move(connection, spec.name, holding.name)
        done[spec.name].steps.append(f"moved {moved} message(s) to {holding.name}")
    for spec in wrong:
        await _delete_empty(connection, spec.name)
        await declare(connection, spec, shape.queue_type)
        await _bind(connection, spec)
        done[spec.name].steps.append(f"declared again as a {shape.queue_type} queue")
    for spec in specs:
        holding = shape.holding(spec.name)
        if await queue_counts(connection, holding.name) is None:
            continue
        back = await move(connection, holding.name, spec.name)
        done[spec.name].moved += back
        done[spec.name].steps.append(f"moved {back} message(s) back")
        await _delete_empty(connection, holding.name)
    return [m for m in done.values() if m.steps]
