"""`imgpipe upload-server`: wiring of the upload service."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.broker.open import new_broker
from imgpipe.provstore.open import new_provenance_store
from imgpipe.runtime.lifecycle import until_available
from imgpipe.runtime.service import Listening, serve_app
from imgpipe.storage.open import new_object_store
from imgpipe.upload.app import create_app
from imgpipe.upload.context import Backends
from imgpipe.upload.settings import UploadSettings

log = logging.getLogger(__name__)


def new_backends(settings: UploadSettings) -> Backends:
    """The upload service's backends, not connected yet (see :func:`connect_backends`)."""
    return Backends(
        broker=new_broker(settings, name="imgpipe-upload"),
        store=new_object_store(settings, buckets=(settings.s3_input_bucket,
                                                  settings.s3_output_bucket)),
        provenance=new_provenance_store(settings),
    )


async def connect_backends(settings: UploadSettings, backends: Backends) -> None:
    """Reach RabbitMQ and S3, waiting for each; declare the queues uploads feed."""
    async def broker() -> None:
        await until_available("RabbitMQ", backends.broker.connect)
        await backends.broker.declare_work_queue(settings.amqp_exchange_subscribe)
        await backends.broker.declare_work_queue(settings.amqp_exchange_prov)

    await asyncio.gather(broker(), until_available("S3", backends.store.connect))
    log.info("upload service connected to its backends")


async def run_upload(settings: UploadSettings, *, stop: asyncio.Event | None = None,
                     listening: Listening | None = None) -> None:
    """Serve the upload API until ``stop`` (or SIGTERM/SIGINT), then finish requests and close.

    The API answers from the start: until RabbitMQ and S3 answer, uploads
    get 503 with Retry-After and /readyz names what is missing.
    """
    backends = new_backends(settings)
    await serve_app(
        "upload service", settings, create_app(settings, backends),
        settings.upload_host, settings.upload_port, stop=stop, listening=listening,
        backends=(backends.broker, backends.store, backends.provenance),
        connect=lambda: connect_backends(settings, backends),
    )
