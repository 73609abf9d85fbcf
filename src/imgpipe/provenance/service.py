"""`imgpipe provenance`: wiring of the provenance recorder."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from imgpipe.broker.metrics import refresh_queue_depths
from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Broker, Consumer
from imgpipe.errors import Unavailable
from imgpipe.provenance.recorder import Recorder
from imgpipe.provstore.open import new_provenance_store
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import ProvenanceSettings
from imgpipe.runtime.http import READY_CHECKS, STOPPING, ops_app, serve
from imgpipe.runtime.lifecycle import Stopped, StopSignal, until_available

log = logging.getLogger(__name__)


async def _starting() -> None:
    raise Unavailable("connecting to RabbitMQ")


async def _start(settings: ProvenanceSettings, broker: Broker, store: ProvenanceStore) -> Consumer:
    await until_available("RabbitMQ", broker.connect)
    queue = await broker.declare_work_queue(settings.amqp_exchange_prov)
    consumer = await broker.consume(queue, Recorder(store).handle,
                                    prefetch=settings.provenance_prefetch,
                                    retry=settings.retry_policy())
    log.info("provenance recorder consuming", extra={"queue": queue})
    return consumer


async def run_provenance(settings: ProvenanceSettings, *, stop: asyncio.Event | None = None) -> None:
    """Store provenance events until SIGTERM/SIGINT.

    While CouchDB is down, events wait in their queue (held, not retried
    away) and /readyz says so; they are stored when it is back.
    """
    async with AsyncExitStack() as stack:
        signal = StopSignal(stop)
        stack.callback(signal.close)
        store = new_provenance_store(settings)
        stack.push_async_callback(store.close)
        broker = new_broker(settings, name="imgpipe-provenance")
        stack.push_async_callback(broker.close)
        refresh = [lambda: refresh_queue_depths(broker)]
        app = ops_app({"startup": _starting, "couchdb": store.check}, refresh)
        ops = await serve(app, settings.provenance_host, settings.provenance_port)
        stack.push_async_callback(ops.cleanup)
        try:
            consumer = await signal.until(_start(settings, broker, store))
        except Stopped:
            return
        stack.push_async_callback(consumer.stop, settings.shutdown_grace)
        stack.callback(app[STOPPING].set)
        app[READY_CHECKS].pop("startup")
        app[READY_CHECKS]["rabbitmq"] = broker.check
        await signal.wait()
    log.info("provenance service stopped")
