"""`imgpipe upload-server`: wiring of the upload service."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.core.backends import open_broker, open_object_store, open_provenance_store
from imgpipe.core.config import UploadSettings
from imgpipe.core.http import serve, wait_for_stop
from imgpipe.core.lifecycle import until_available
from imgpipe.upload.app import Backends, create_app

log = logging.getLogger(__name__)


async def open_backends(settings: UploadSettings) -> Backends:
    store = await until_available(
        "S3",
        lambda: open_object_store(
            settings, buckets=(settings.s3_input_bucket, settings.s3_output_bucket)
        ),
    )
    broker = await open_broker(settings, name="imgpipe-upload")
    await broker.declare_work_queue(settings.amqp_exchange_subscribe)
    await broker.declare_work_queue(settings.amqp_exchange_prov)
    provenance = await open_provenance_store(settings)
    return Backends(broker=broker, store=store, provenance=provenance)


async def close_backends(backends: Backends) -> None:
    await backends.broker.close()
    await backends.store.close()
    await backends.provenance.close()


async def run_upload(settings: UploadSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the upload API until SIGTERM/SIGINT, then finish requests and close."""
    backends = await open_backends(settings)
    try:
        app = create_app(settings, backends)
        runner = await serve(
            app, settings.upload_host, settings.upload_port, grace=settings.shutdown_grace
        )
        try:
            await wait_for_stop(stop)
        finally:
            await runner.cleanup()
    finally:
        await close_backends(backends)
    log.info("upload service stopped")
