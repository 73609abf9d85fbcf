"""Benchmark the delivery machinery on RabbitMQ: what the guarantees cost.

    .venv/bin/python bench/delivery.py            # 2000 messages per case
    .venv/bin/python bench/delivery.py --smoke    # 100 messages, seconds

Against the broker of ``AMQP_URL`` (default: the one on 127.0.0.1:5672), with
queues of its own that it deletes afterwards, it reports (a) persistent,
confirmed, mandatory publishes per second, one at a time and from 16
concurrent tasks; (b) publish-to-ack round trips per second through
:class:`~imgpipe.broker.rabbitmq.AmqpBroker`'s consumer (no-op handler,
prefetch 16); (c) the retry path: a handler that fails once with a transient
error, timed from the failure to the second delivery, minus the configured
delay (median and 95th percentile). Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import time
import uuid

import aio_pika

from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Delivery
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import TransientError

RETRY_DELAY = 0.05


async def _publish(broker: AmqpBroker, exchange: str, count: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with slots:
            await broker.publish(exchange, b'{"n": %d}' % n, message_id=str(n))

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started)


async def _round_trips(broker: AmqpBroker, exchange: str, queue: str, count: int) -> float:
    done = asyncio.Event()
    seen = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    consumer = await broker.consume(queue, handler, prefetch=16)
    started = time.perf_counter()
    await _publish(broker, exchange, count, 16)
    await asyncio.wait_for(done.wait(), 300)
    rate = count / (time.perf_counter() - started)
    await consumer.stop(grace=5)
    return rate


async def _retry_latency(broker: AmqpBroker, exchange: str, queue: str,
                         count: int) -> list[float]:
    failed_at: dict[str, float] = {}
    extra: list[float] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        key = delivery.message_id or ""
        if delivery.attempt == 1:
            failed_at[key] = time.perf_counter()
            raise TransientError("once", reason="bench")
        extra.append(time.perf_counter() - failed_at[key] - RETRY_DELAY)
        if len(extra) >= count:
            done.set()

    consumer = await broker.consume(queue, handler, prefetch=16,
                                    retry=RetryPolicy((RETRY_DELAY,)))
    await _publish(broker, exchange, count, 16)
    await asyncio.wait_for(done.wait(), 300)
    await consumer.stop(grace=5)
    return extra


async def _cleanup(url: str, exchange: str) -> None:
    queue = work_queue_name(exchange)
    names = topology(queue)
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        for name in (queue, names.dead_letter_queue, names.retry_queue(RETRY_DELAY)):
            await channel.queue_delete(name)
        for name in (exchange, names.dead_letter_exchange):
            await channel.exchange_delete(name)


async def run(count: int, url: str) -> dict[str, float]:
    results: dict[str, float] = {}
    broker = AmqpBroker(url, name="imgpipe-bench")
    await broker.connect()
    exchanges = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    try:
        queues = [await broker.declare_work_queue(e) for e in exchanges]
        results["publish_per_s_sequential"] = await _publish(broker, exchanges[0], count, 1)
        results["publish_per_s_16_tasks"] = await _publish(broker, exchanges[0], count, 16)
        results["round_trips_per_s"] = await _round_trips(broker, exchanges[1], queues[1], count)
        extra = sorted(await _retry_latency(broker, exchanges[2], queues[2], count // 4))
        results["retry_overhead_ms_median"] = statistics.median(extra) * 1000
        results["retry_overhead_ms_p95"] = extra[int(len(extra) * 0.95) - 1] * 1000
    finally:
        await broker.close()
        for exchange in exchanges:
            await _cleanup(url, exchange)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="100 messages per case")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    logging.getLogger("imgpipe").setLevel(logging.ERROR)  # the retries it provokes
    results = asyncio.run(run(100 if args.smoke else args.count, url))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:28} {value:10.1f}")


if __name__ == "__main__":
    main()
