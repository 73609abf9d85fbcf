"""`imgpipe provenance`: wiring of the provenance recorder."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.broker.metrics import refresh_queue_depths
from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Broker, Consumer
from imgpipe.provenance.recorder import Recorder
from imgpipe.provenance.settings import ProvenanceSettings
from imgpipe.provstore.open import new_provenance_store
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.lifecycle import until_available
from imgpipe.runtime.service import Listening, serve_consumer

log = logging.getLogger(__name__)


async def _start(settings: ProvenanceSettings, broker: Broker, store: ProvenanceStore) -> Consumer:
    await until_available("RabbitMQ", broker.connect)
    queue = await broker.declare_work_queue(settings.amqp_exchange_prov)
    consumer = await broker.consume(queue, Recorder(store).handle,
                                    prefetch=settings.provenance_prefetch,
                                    retry=settings.retry_policy())
    log.info("provenance recorder consuming", extra={"queue": queue})
    return consumer


async def run_provenance(settings: ProvenanceSettings, *, stop: asyncio.Event | None = None,
                         listening: Listening | None = None) -> None:
    """Store provenance events until ``stop`` (or SIGTERM/SIGINT).

    While CouchDB is down, events wait in their queue (held, not retried
    away) and /readyz says so; they are stored when it is back.
    """
    store = new_provenance_store(settings)
    broker = new_broker(settings, name="imgpipe-provenance")
    await serve_consumer(
        "provenance service", settings, settings.provenance_host, settings.provenance_port,
        stop=stop, listening=listening, backends=(store, broker),
        start=lambda: _start(settings, broker, store),
        waiting_for="connecting to RabbitMQ",
        checks={"rabbitmq": broker.check},
        checks_from_start={"couchdb": store.check},
        refresh=[lambda: refresh_queue_depths(broker)],
    )
