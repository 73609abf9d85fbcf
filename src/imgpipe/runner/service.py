"""`imgpipe runner`: wiring of a processing stage."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.core.backends import open_broker, open_object_store
from imgpipe.core.config import RunnerSettings
from imgpipe.core.http import ops_app, serve, wait_for_stop
from imgpipe.core.lifecycle import until_available
from imgpipe.runner.imageproc_client import ImageprocClient
from imgpipe.runner.worker import Runner

log = logging.getLogger(__name__)


async def run_runner(settings: RunnerSettings, *, stop: asyncio.Event | None = None) -> None:
    """Consume the stage's queue until SIGTERM/SIGINT; in-flight images finish first."""
    store = await until_available(
        "S3", lambda: open_object_store(settings, buckets=(settings.s3_output_bucket,))
    )
    broker = await open_broker(settings, name=f"imgpipe-runner-{settings.stage}")
    imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_timeout)
    try:
        queue = await broker.declare_work_queue(settings.amqp_exchange_subscribe)
        await broker.declare_work_queue(settings.amqp_exchange_prov)
        await broker.declare_exchange(settings.amqp_exchange_publish)
        runner = Runner(settings, broker, store, imageproc)
        ops = await serve(
            ops_app({"rabbitmq": broker.check, "s3": store.check, "imageproc": imageproc.check}),
            settings.runner_host, settings.runner_port,
        )
        consumer = await broker.consume(queue, runner.handle, prefetch=settings.amqp_prefetch)
        log.info("runner consuming", extra={"queue": queue, "stage": settings.stage})
        try:
            await wait_for_stop(stop)
        finally:
            await consumer.stop(grace=settings.shutdown_grace)
            await ops.cleanup()
    finally:
        await broker.close()
        await imageproc.close()
        await store.close()
    log.info("runner stopped")
