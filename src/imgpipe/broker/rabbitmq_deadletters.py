"""A RabbitMQ stage's dead-letter queue, for ``imgpipe dlq``: look, replay, purge.

Looking takes messages unacknowledged and closes the channel, which puts them
back in order; a replayed message is acknowledged in the dead-letter queue only
after the work queue has confirmed its copy (with a fresh attempt count and its
history, :func:`~imgpipe.broker.policy.replay_headers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
import aio_pika.abc

from imgpipe.broker.policy import replay_headers
from imgpipe.broker.protocol import DeadLetter
from imgpipe.broker.topology import topology

Connection = aio_pika.abc.AbstractConnection


async def _take(
    channel: aio_pika.abc.AbstractChannel, queue: str, limit: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Up to ``limit`` messages of ``queue``, unacked (closing the channel returns them)."""
    declared = await channel.declare_queue(queue, passive=True)
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    while len(taken) < limit:
        message = await declared.get(no_ack=False, fail=False)
        if message is None:
            break
        taken.append(message)
    return taken


def _letter(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    return DeadLetter.of(message.body, message.message_id, dict(message.headers or {}))


async def show(connection: Connection, queue: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters of work queue ``queue``, oldest first; they stay."""
    channel = await connection.channel()
    try:
        return [_letter(m) for m in await _take(channel, topology(queue).dead_letter_queue, limit)]
    finally:
        await channel.close()  # unacked messages go back, in order


async def replay(connection: Connection, queue: str, limit: int,
                 ids: Sequence[str] = ()) -> list[DeadLetter]:
    """Send up to ``limit`` dead letters (with ``ids``, only those) back to ``queue``."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    replayed: list[DeadLetter] = []
    try:
        dlq = topology(queue).dead_letter_queue
        for message in await _take(channel, dlq, limit if not ids else 1_000_000):
            letter = _letter(message)
            if not letter.chosen(ids):
                continue
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body, message_id=message.message_id,
                    content_type=message.content_type or "application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=replay_headers(dict(message.headers or {})),
                ),
                routing_key=queue, mandatory=True,
            )
            await message.ack()
            replayed.append(letter)
            if len(replayed) >= limit:
                break
    finally:
        await channel.close()
    return replayed


async def purge(connection: Connection, queue: str) -> int:
    """Delete the dead letters of work queue ``queue``; how many."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(topology(queue).dead_letter_queue, passive=True)
        result = await declared.purge()
        return int(result.message_count or 0)
    finally:
        await channel.close()
