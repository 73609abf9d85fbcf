"""`imgpipe runner`: wiring of a processing stage."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from imgpipe.broker.metrics import refresh_queue_depths
from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Broker, Consumer
from imgpipe.client.imageproc import ImageprocClient
from imgpipe.domain.keys import safe_part
from imgpipe.errors import ConfigError, Unavailable
from imgpipe.runner.worker import Runner
from imgpipe.runtime.config import RunnerSettings
from imgpipe.runtime.http import READY_CHECKS, STOPPING, ops_app, serve
from imgpipe.runtime.lifecycle import Stopped, StopSignal, until_available
from imgpipe.storage.open import new_object_store

log = logging.getLogger(__name__)


async def _starting() -> None:
    raise Unavailable("connecting to its backends")


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


async def run_runner(settings: RunnerSettings, *, stop: asyncio.Event | None = None) -> None:
    """Consume the stage's queue until SIGTERM/SIGINT; in-flight images finish first.

    Health and readiness are served from the start; until RabbitMQ and S3
    answer, /readyz says what the runner waits for.
    """
    if not safe_part(settings.stage):
        raise ConfigError(f"RUNNER_STAGE: {settings.stage!r} cannot name output objects "
                          "(letters, digits, '.', '_' and '-' only)")
    async with AsyncExitStack() as stack:
        signal = StopSignal(stop)
        stack.callback(signal.close)
        broker = new_broker(settings, name=f"imgpipe-runner-{settings.stage}")
        stack.push_async_callback(broker.close)
        store = new_object_store(settings, buckets=(settings.s3_output_bucket,))
        stack.push_async_callback(store.close)
        imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_timeout)
        stack.push_async_callback(imageproc.close)
        runner = Runner(settings, broker, store, imageproc)
        refresh = [lambda: refresh_queue_depths(broker)]
        app = ops_app({"startup": _starting}, refresh)
        ops = await serve(app, settings.runner_host, settings.runner_port)
        stack.push_async_callback(ops.cleanup)
        try:
            consumer = await signal.until(_start(settings, broker, runner))
        except Stopped:
            return
        stack.push_async_callback(consumer.stop, settings.shutdown_grace)
        stack.callback(app[STOPPING].set)
        app[READY_CHECKS].pop("startup")
        app[READY_CHECKS].update(
            {"rabbitmq": broker.check, "s3": store.check, "imageproc": imageproc.check})
        await signal.wait()
    log.info("runner stopped")
