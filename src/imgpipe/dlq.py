"""`imgpipe dlq list|show|replay|purge`: a person's view of the dead-letter queues.

A stage is named by the exchange it consumes (``AMQP_EXCHANGE_SUBSCRIBE``,
``AMQP_EXCHANGE_PROV``, ...); its dead-letter queue is ``imgpipe.<exchange>.dlq``.
``show`` looks without taking anything; ``replay`` sends messages back to their
work queue with a fresh attempt count and their dead-letter history; ``purge``
deletes them (it asks for ``--yes``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from imgpipe.broker.policy import (
    DEAD_LETTERED_AT,
    ERROR,
    REASON,
    attempt_of,
    history_of,
    replay_headers,
    replays_of,
)
from imgpipe.broker.protocol import topology, work_queue_name
from imgpipe.runtime.config import AmqpSettings, load
from imgpipe.runtime.logs import redact


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as a person reads it."""

    message_id: str | None
    job_id: str | None
    kind: str | None
    reason: str
    error: str
    attempts: int
    replays: int
    dead_lettered_at: str
    history: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def describe(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    try:
        body = json.loads(message.body)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    reason = _text(headers.get(REASON))
    if not reason and headers.get("x-death"):
        reason = "rejected"
    return DeadLetter(
        message_id=message.message_id,
        job_id=body.get("job_id"),
        kind=body.get("kind"),
        reason=reason or "unknown",
        error=redact(_text(headers.get(ERROR))),
        attempts=attempt_of(headers),
        replays=replays_of(headers),
        dead_lettered_at=_text(headers.get(DEAD_LETTERED_AT)),
        history=history_of(headers),
    )


class DeadLetters:
    """Operations on the dead-letter queue of one stage."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, exchange: str) -> None:
        self.connection = connection
        self.queue = work_queue_name(exchange)
        self.dlq = topology(self.queue).dead_letter_queue

    async def depth(self, name: str) -> int | None:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _take(
        self, channel: aio_pika.abc.AbstractChannel, limit: int
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        queue = await channel.declare_queue(self.dlq, passive=True)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
        return taken

    async def show(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` messages, oldest first; all stay in the queue."""
        channel = await self.connection.channel()
        try:
            taken = await self._take(channel, limit)
            return [describe(m) for m in taken]
        finally:
            await channel.close()  # unacked messages go back, in order

    async def replay(self, limit: int, ids: Sequence[str] = ()) -> list[DeadLetter]:
        """Send messages back to the work queue; with ``ids``, only those message or job ids."""
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        replayed: list[DeadLetter] = []
        try:
            for message in await self._take(channel, limit if not ids else 1_000_000):
                letter = describe(message)
                if ids and letter.message_id not in ids and letter.job_id not in ids:
                    continue
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body, message_id=message.message_id,
                        content_type=message.content_type or "application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=replay_headers(dict(message.headers or {})),
                    ),
                    routing_key=self.queue, mandatory=True,
                )
                await message.ack()
                replayed.append(letter)
                if len(replayed) >= limit:
                    break
        finally:
            await channel.close()
        return replayed

    async def purge(self) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.dlq, passive=True)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            await channel.close()


def _print_letters(letters: list[DeadLetter], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump([letter.as_dict() for letter in letters], out, indent=2)
        out.write("\n")
        return
    for letter in letters:
        out.write(f"{letter.dead_lettered_at or '-':25} job {letter.job_id or '-'} "
                  f"({letter.kind or '?'}) after {letter.attempts} attempt(s)"
                  f"{f', replayed {letter.replays}x' if letter.replays else ''}\n"
                  f"    {letter.reason}: {letter.error}\n")
        out.writelines(f"    earlier: {old.get('dead_lettered_at') or '-'} "
                      f"{old.get('reason')}: {old.get('error')}\n" for old in letter.history)


async def run_dlq(args: argparse.Namespace, settings: AmqpSettings, out: TextIO) -> int:
    exchanges = args.exchange or (
        [settings.amqp_exchange_subscribe, settings.amqp_exchange_prov]
        if args.action == "list" else [settings.amqp_exchange_subscribe]
    )
    try:
        connection = await aio_pika.connect(settings.broker_url(), timeout=10)
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        print(f"imgpipe dlq: RabbitMQ is unreachable: {type(exc).__name__}", file=sys.stderr)
        return 1
    async with connection:
        code = 0
        for exchange in exchanges:
            letters = DeadLetters(connection, exchange)
            if args.action == "list":
                work, dead = await letters.depth(letters.queue), await letters.depth(letters.dlq)
                if dead is None:
                    out.write(f"{exchange}: no dead-letter queue ({letters.dlq})\n")
                    code = 1
                else:
                    out.write(f"{exchange}: {dead} dead-lettered in {letters.dlq}, "
                              f"{work if work is not None else '?'} waiting in {letters.queue}\n")
                continue
            if await letters.depth(letters.dlq) is None:
                print(f"imgpipe dlq: no dead-letter queue {letters.dlq}", file=sys.stderr)
                return 1
            if args.action == "show":
                _print_letters(await letters.show(args.limit), args.json, out)
            elif args.action == "replay":
                replayed = await letters.replay(args.limit, args.id or ())
                if args.json:
                    _print_letters(replayed, True, out)
                else:
                    out.write(f"{exchange}: replayed {len(replayed)} message(s) "
                              f"to {letters.queue}\n")
            elif args.action == "purge":
                if not args.yes:
                    count = await letters.depth(letters.dlq)
                    print(f"imgpipe dlq: purge would delete {count} message(s) from "
                          f"{letters.dlq}; add --yes to do it", file=sys.stderr)
                    return 2
                out.write(f"{exchange}: purged {await letters.purge()} message(s)\n")
        return code


def add_parser(sub: Any) -> None:
    """Register ``imgpipe dlq`` on the CLI's subcommands."""
    parser = sub.add_parser(
        "dlq", help="Inspect, replay or purge a stage's dead-letter queue.",
        description="A stage's dead-letter queue holds the messages imgpipe gave up on "
                    "(a permanent failure, or every retry used). 'show' only looks; 'replay' "
                    "sends them back with a fresh attempt count and their history; 'purge' "
                    "deletes them.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (("list", "dead-lettered and waiting messages per stage"),
                        ("show", "print dead-lettered messages (they stay queued)"),
                        ("replay", "send dead-lettered messages back to their work queue"),
                        ("purge", "delete a stage's dead-lettered messages")):
        p = actions.add_parser(name, help=help_, description=help_)
        p.add_argument("--exchange", action="append", metavar="EXCHANGE",
                       help="the stage's exchange (default: AMQP_EXCHANGE_SUBSCRIBE"
                            + (" and AMQP_EXCHANGE_PROV)" if name == "list" else ")"))
        if name in ("show", "replay"):
            p.add_argument("--limit", type=int, default=20 if name == "show" else 1000,
                           help="at most this many messages")
            p.add_argument("--json", action="store_true", help="print JSON")
        if name == "replay":
            p.add_argument("--id", action="append", metavar="ID",
                           help="only the message or job with this id (repeatable)")
        if name == "purge":
            p.add_argument("--yes", action="store_true", help="really delete them")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    settings = load(AmqpSettings)
    return asyncio.run(run_dlq(args, settings, sys.stdout))
