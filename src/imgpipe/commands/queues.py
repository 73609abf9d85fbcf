"""`imgpipe queues migrate`: give a stage's RabbitMQ queues the configured queue type.

A service that finds one of its queues with another type than
``AMQP_QUEUE_TYPE`` stops at start with ``queue_type_mismatch`` and names this
command. With the stage's services stopped, it moves each wrong-typed queue's
messages to a holding queue, declares the queue again with the right type and
moves them back; a message leaves a queue only once the next one has confirmed
it (:mod:`imgpipe.broker.rabbitmq_queues`). Running it again finishes an
interrupted migration; on the embedded broker there is nothing to migrate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from imgpipe.broker.open import new_broker
from imgpipe.errors import ImgpipeError
from imgpipe.runtime.config import AmqpSettings, load


async def run_queues(args: argparse.Namespace, settings: AmqpSettings, out: TextIO) -> int:
    """Carry out ``imgpipe queues migrate`` on the broker ``AMQP_URL`` names."""
    exchanges = args.exchange or [settings.amqp_exchange_subscribe, settings.amqp_exchange_prov]
    broker = new_broker(settings, name="imgpipe-queues")
    try:
        await broker.connect()
        for exchange in exchanges:
            done = await broker.migrate_queues(exchange, settings.retry_policy().delays)
            if not done:
                out.write(f"{exchange}: every queue is already {settings.amqp_queue_type}\n")
            for migration in done:
                out.write(f"{exchange}: {migration.queue}: {'; '.join(migration.steps)}\n")
    except ImgpipeError as exc:
        print(f"imgpipe queues: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await broker.close()
    return 0


def add_parser(sub: Any) -> None:
    """Register ``imgpipe queues`` on the CLI's subcommands."""
    parser = sub.add_parser(
        "queues", help="Manage imgpipe's RabbitMQ queues.",
        description="Queues have a type (AMQP_QUEUE_TYPE: quorum by default, or classic) "
                    "that RabbitMQ cannot change in place.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = actions.add_parser(
        "migrate", help="give a stage's queues the type AMQP_QUEUE_TYPE, keeping their messages",
        description="Stop the services of the stage first. Moves the messages of each queue "
                    "of the wrong type to a holding queue, declares the queue again and moves "
                    "them back; run it again to finish an interrupted migration.")
    migrate.add_argument("--exchange", action="append", metavar="EXCHANGE",
                         help="the stage's exchange (default: AMQP_EXCHANGE_SUBSCRIBE and "
                              "AMQP_EXCHANGE_PROV); repeatable")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    settings = load(AmqpSettings)
    return asyncio.run(run_queues(args, settings, sys.stdout))
