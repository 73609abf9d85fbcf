"""`imgpipe upload-server`: wiring of the upload service."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.core.backends import (
    ensure_buckets,
    new_broker,
    new_object_store,
    new_provenance_store,
)
from imgpipe.core.config import UploadSettings
from imgpipe.core.http import STOPPING, serve
from imgpipe.core.lifecycle import StopSignal, until_available
from imgpipe.upload.app import Backends, create_app

log = logging.getLogger(__name__)


async def connect_backends(settings: UploadSettings, backends: Backends) -> None:
    """Reach RabbitMQ and S3, waiting for each; declare the queues uploads feed."""
    await until_available("RabbitMQ", backends.broker.connect)
    await until_available("S3", lambda: ensure_buckets(
        backends.store, settings, (settings.s3_input_bucket, settings.s3_output_bucket)))
    await backends.broker.declare_work_queue(settings.amqp_exchange_subscribe)
    await backends.broker.declare_work_queue(settings.amqp_exchange_prov)
    log.info("upload service connected to its backends")


async def close_backends(backends: Backends) -> None:
    await backends.broker.close()
    await backends.store.close()
    await backends.provenance.close()


async def run_upload(settings: UploadSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the upload API until SIGTERM/SIGINT, then finish requests and close.

    The API answers from the start: until RabbitMQ and S3 answer, uploads
    get 503 with Retry-After and /readyz names what is missing.
    """
    signal = StopSignal(stop)
    backends = Backends(
        broker=new_broker(settings, name="imgpipe-upload"),
        store=await new_object_store(settings),
        provenance=await new_provenance_store(settings),
    )
    app = create_app(settings, backends)
    runner = await serve(app, settings.upload_host, settings.upload_port,
                         grace=settings.shutdown_grace)
    connecting = asyncio.create_task(connect_backends(settings, backends))
    try:
        await signal.wait()
    finally:
        app[STOPPING].set()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await runner.cleanup()
        await close_backends(backends)
        signal.close()
    log.info("upload service stopped")
