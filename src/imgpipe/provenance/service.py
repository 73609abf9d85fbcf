"""`imgpipe provenance`: wiring of the provenance recorder."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.core.backends import open_broker, open_provenance_store
from imgpipe.core.config import ProvenanceSettings
from imgpipe.core.http import ops_app, serve, wait_for_stop
from imgpipe.provenance.recorder import Recorder

log = logging.getLogger(__name__)


async def run_provenance(settings: ProvenanceSettings, *, stop: asyncio.Event | None = None) -> None:
    """Store provenance events until SIGTERM/SIGINT."""
    store = await open_provenance_store(settings)
    broker = await open_broker(settings, name="imgpipe-provenance")
    try:
        queue = await broker.declare_work_queue(settings.amqp_exchange_prov)
        ops = await serve(ops_app({"rabbitmq": broker.check, "couchdb": store.check}),
                          settings.provenance_host, settings.provenance_port)
        consumer = await broker.consume(queue, Recorder(store).handle,
                                        prefetch=settings.amqp_prefetch)
        log.info("provenance recorder consuming", extra={"queue": queue})
        try:
            await wait_for_stop(stop)
        finally:
            await consumer.stop(grace=settings.shutdown_grace)
            await ops.cleanup()
    finally:
        await broker.close()
        await store.close()
    log.info("provenance service stopped")
