"""`imgpipe runner`: wiring of a processing stage."""

from __future__ import annotations

import asyncio
import logging

from imgpipe.broker.metrics import refresh_queue_depths
from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Broker, Consumer
from imgpipe.client.imageproc import ImageprocClient
from imgpipe.domain.keys import safe_part
from imgpipe.errors import ConfigError
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runner.worker import Runner
from imgpipe.runtime.lifecycle import until_available
from imgpipe.runtime.service import Listening, serve_consumer
from imgpipe.storage.open import new_object_store

log = logging.getLogger(__name__)


async def _start(settings: RunnerSettings, broker: Broker, runner: Runner) -> Consumer:
    await until_available("RabbitMQ", broker.connect)
    await until_available("S3", runner.store.connect)
    queue = await broker.declare_work_queue(settings.amqp_exchange_subscribe)
    await broker.declare_work_queue(settings.amqp_exchange_prov)
    await broker.declare_exchange(settings.amqp_exchange_publish)
    consumer = await broker.consume(queue, runner.handle, prefetch=settings.amqp_prefetch,
                                    retry=settings.retry_policy())
    log.info("runner consuming", extra={"queue": queue, "stage": settings.stage})
    return consumer


async def run_runner(settings: RunnerSettings, *, stop: asyncio.Event | None = None,
                     listening: Listening | None = None) -> None:
    """Consume the stage's queue until ``stop`` (or SIGTERM/SIGINT); in-flight images finish.

    Health and readiness are served from the start; until RabbitMQ and S3
    answer, /readyz says what the runner waits for.
    """
    if not safe_part(settings.stage):
        raise ConfigError(f"RUNNER_STAGE: {settings.stage!r} cannot name output objects "
                          "(letters, digits, '.', '_' and '-' only)")
    broker = new_broker(settings, name=f"imgpipe-runner-{settings.stage}")
    store = new_object_store(settings, buckets=(settings.s3_output_bucket,))
    imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_client_timeout)
    runner = Runner(settings, broker, store, imageproc)
    await serve_consumer(
        "runner", settings, settings.runner_host, settings.runner_port,
        stop=stop, listening=listening, backends=(broker, store, imageproc),
        start=lambda: _start(settings, broker, runner),
        waiting_for="connecting to its backends",
        checks={"rabbitmq": broker.check, "s3": store.check, "imageproc": imageproc.check},
        refresh=[lambda: refresh_queue_depths(broker)],
    )
