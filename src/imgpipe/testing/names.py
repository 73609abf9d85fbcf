"""The one naming scheme for a run's exchanges, buckets and database.

A run (a test, a module's shared system, a benchmark case) is named
``<prefix>-<8 hex digits>`` (:func:`run_name`); everything it makes on a shared server
is named after it, so runs never meet and :meth:`RunNames.remove` can delete all of it:

=========================  ======================
``AMQP_EXCHANGE_SUBSCRIBE``  ``<name>.uploaded``
``AMQP_EXCHANGE_PUBLISH``    ``<name>.processed``
``AMQP_EXCHANGE_PROV``       ``<name>.provenance``
``S3_INPUT_BUCKET``          ``<name>-in``
``S3_OUTPUT_BUCKET``         ``<name>-out``
``COUCHDB_DB``               ``<name>-prov``
=========================  ======================
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
import aiohttp

from imgpipe.broker.policy import DEFAULT_DELAYS
from imgpipe.broker.topology import topology, work_queue_name


def run_name(prefix: str = "t") -> str:
    """A fresh run name: ``<prefix>-<8 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RunNames:
    """The names of one run's exchanges, buckets and database."""

    name: str

    def env(self) -> dict[str, str]:
        """The project's settings that carry these names."""
        return {
            "AMQP_EXCHANGE_SUBSCRIBE": f"{self.name}.uploaded",
            "AMQP_EXCHANGE_PUBLISH": f"{self.name}.processed",
            "AMQP_EXCHANGE_PROV": f"{self.name}.provenance",
            "S3_INPUT_BUCKET": f"{self.name}-in",
            "S3_OUTPUT_BUCKET": f"{self.name}-out",
            "COUCHDB_DB": f"{self.name}-prov",
        }

    @property
    def extra_queue(self) -> str:
        """A further queue name a broker test may use (removed with the rest)."""
        return f"{self.name}.extra"

    def amqp_names(self, delays: Iterable[float] = ()) -> tuple[list[str], list[str]]:
        """The exchanges and queues the run's stages make (retry queues for ``delays``
        besides the default ones)."""
        exchanges = [v for k, v in self.env().items() if k.startswith("AMQP_EXCHANGE_")]
        queues = [work_queue_name(e) for e in exchanges] + [self.extra_queue]
        every_delay = set(DEFAULT_DELAYS) | set(delays)
        shapes = [topology(q) for q in queues]
        queues += [t.dead_letter_queue for t in shapes]
        queues += [t.retry_queue(d) for t in shapes for d in every_delay]
        exchanges += [t.dead_letter_exchange for t in shapes]
        return exchanges, queues

    async def remove(self, amqp_url: str | None = None, couchdb: tuple[str, dict[str, str]]
                     | None = None, delays: Iterable[float] = ()) -> None:
        """Delete the run's queues and exchanges from RabbitMQ at ``amqp_url`` and its
        database from CouchDB (``couchdb``: URL and auth headers), as far as they exist."""
        if amqp_url:
            await remove_amqp_names(amqp_url, *self.amqp_names(delays))
        if couchdb:
            url, headers = couchdb
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with aiohttp.ClientSession(headers=headers) as http, \
                        http.delete(f"{url}/{self.env()['COUCHDB_DB']}"):
                    pass


async def remove_amqp_names(url: str, exchanges: list[str], queues: list[str]) -> None:
    """Delete queues and exchanges from a shared RabbitMQ (those missing are skipped)."""
    connection = await aio_pika.connect(url)
    async with connection:
        for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
            channel = await connection.channel()
            try:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except aio_pika.exceptions.AMQPError:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
