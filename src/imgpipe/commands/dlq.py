"""`imgpipe dlq list|show|replay|purge`: a person's view of the dead-letter queues.

It works through the :class:`~imgpipe.broker.protocol.Broker` protocol, so on
RabbitMQ as on the embedded broker of ``imgpipe dev`` (``AMQP_URL=file:///dir``;
one process owns that directory, so stop ``imgpipe dev`` first).

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
from typing import Any, TextIO

from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Broker, DeadLetter
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import ImgpipeError
from imgpipe.runtime.config import AmqpSettings, load


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


async def _run(args: argparse.Namespace, broker: Broker, exchanges: list[str],
               out: TextIO) -> int:
    code = 0
    for exchange in exchanges:
        queue = work_queue_name(exchange)
        dlq = topology(queue).dead_letter_queue
        dead = await broker.queue_depth(dlq)
        if args.action == "list":
            if dead is None:
                out.write(f"{exchange}: no dead-letter queue ({dlq})\n")
                code = 1
            else:
                work = await broker.queue_depth(queue)
                out.write(f"{exchange}: {dead} dead-lettered in {dlq}, "
                          f"{work if work is not None else '?'} waiting in {queue}\n")
            continue
        if dead is None:
            print(f"imgpipe dlq: no dead-letter queue {dlq}", file=sys.stderr)
            return 1
        if args.action == "show":
            _print_letters(await broker.dead_letters(queue, args.limit), args.json, out)
        elif args.action == "replay":
            replayed = await broker.replay_dead_letters(queue, args.limit, args.id or ())
            if args.json:
                _print_letters(replayed, True, out)
            else:
                out.write(f"{exchange}: replayed {len(replayed)} message(s) to {queue}\n")
        elif args.action == "purge":
            if not args.yes:
                print(f"imgpipe dlq: purge would delete {dead} message(s) from "
                      f"{dlq}; add --yes to do it", file=sys.stderr)
                return 2
            out.write(f"{exchange}: purged {await broker.purge_dead_letters(queue)} message(s)\n")
    return code


async def run_dlq(args: argparse.Namespace, settings: AmqpSettings, out: TextIO) -> int:
    """Carry out ``imgpipe dlq ACTION`` on the broker ``AMQP_URL`` names (RabbitMQ or embedded)."""
    exchanges = args.exchange or (
        [settings.amqp_exchange_subscribe, settings.amqp_exchange_prov]
        if args.action == "list" else [settings.amqp_exchange_subscribe]
    )
    broker = new_broker(settings, name="imgpipe-dlq")
    try:
        await broker.connect()
    except ImgpipeError as exc:
        print(f"imgpipe dlq: {exc.message}", file=sys.stderr)
        return 1
    try:
        return await _run(args, broker, exchanges, out)
    finally:
        await broker.close()


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
