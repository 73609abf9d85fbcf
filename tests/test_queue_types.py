"""Queue types on the real RabbitMQ: quorum by default, classic on request, a clear
start-up error when a queue has the other type, and `imgpipe queues migrate`."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aio_pika
import pytest

from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Delivery
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.broker.rabbitmq_queues import QueueShape
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.cli import build_parser
from imgpipe.commands.queues import run_queues
from imgpipe.errors import ConfigError, PermanentError
from imgpipe.runtime.config import AmqpSettings, load
from imgpipe.testing.names import remove_amqp_names

DELAYS = (0.5, 30.0)
POLICY = RetryPolicy(DELAYS)


def _names(exchange: str) -> tuple[list[str], list[str]]:
    queue = work_queue_name(exchange)
    names = topology(queue)
    queues = [queue, names.dead_letter_queue, *(names.retry_queue(d) for d in DELAYS)]
    queues += [f"{q}.migrating" for q in queues]
    return [exchange, names.dead_letter_exchange], queues


@pytest.fixture
async def stage(rabbitmq_url: str, unique_name: str) -> AsyncIterator[str]:
    yield unique_name
    await remove_amqp_names(rabbitmq_url, *_names(unique_name))


async def _broker(url: str, queue_type: str) -> AmqpBroker:
    broker = AmqpBroker(url, name="imgpipe-test-queues", shape=QueueShape(queue_type))
    await broker.connect()
    return broker


async def _queue_type(url: str, stage: str) -> str:
    """The type of ``stage``'s work queue: the one whose arguments declaring it again accepts."""
    async with await aio_pika.connect(url) as connection:
        for kind in ("quorum", "classic"):
            spec = QueueShape(kind).work(stage, work_queue_name(stage))
            channel = await connection.channel()
            try:
                await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
                return kind
            except aio_pika.exceptions.ChannelPreconditionFailed:
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
    raise AssertionError(f"no type fits the work queue of {stage}")


async def test_queues_are_quorum_queues_by_default(rabbitmq_url: str, stage: str) -> None:
    broker = AmqpBroker(rabbitmq_url, name="imgpipe-test-queues")
    await broker.connect()
    try:
        queue = await broker.declare_work_queue(stage)
        consumer = await broker.consume(queue, _refuse, prefetch=1, retry=POLICY)
        await consumer.stop(grace=1)
    finally:
        await broker.close()
    assert await _queue_type(rabbitmq_url, stage) == "quorum"
    classic = await _broker(rabbitmq_url, "classic")
    try:
        with pytest.raises(ConfigError) as caught:
            await classic.declare_work_queue(stage)
    finally:
        await classic.close()
    assert caught.value.reason == "queue_type_mismatch"
    assert "AMQP_QUEUE_TYPE=classic" in caught.value.message


async def _refuse(delivery: Delivery) -> None:
    raise PermanentError("not an image", reason="undecodable")


async def _fill(broker: AmqpBroker, stage: str, count: int) -> str:
    """``count`` jobs in the work queue, two of them dead-lettered first."""
    queue = await broker.declare_work_queue(stage)
    consumer = await broker.consume(queue, _refuse, prefetch=2, retry=POLICY)
    for n in range(2):
        await broker.publish(stage, json.dumps({"job_id": f"dead{n}"}).encode(),
                             message_id=f"dead{n}")
    while await broker.queue_depth(topology(queue).dead_letter_queue) != 2:
        await asyncio.sleep(0.05)
    await consumer.stop(grace=1)
    for n in range(count):
        await broker.publish(stage, json.dumps({"job_id": f"job{n}"}).encode(),
                             message_id=f"job{n}", headers={"x-own": n})
    return queue


async def _migrate(rabbitmq_url: str, queue_type: str, stage: str) -> tuple[int, str]:
    settings = load(AmqpSettings, amqp_url=rabbitmq_url, amqp_queue_type=queue_type,
                    amqp_retry_delays=",".join(str(d) for d in DELAYS))
    out = io.StringIO()
    args = build_parser().parse_args(["queues", "migrate", "--exchange", stage])
    return await run_queues(args, settings, out), out.getvalue()


@pytest.mark.parametrize(("old", "new"), [("classic", "quorum"), ("quorum", "classic")])
async def test_a_queue_of_the_other_type_is_an_error_until_migrated(
    rabbitmq_url: str, stage: str, old: str, new: str
) -> None:
    broker = await _broker(rabbitmq_url, old)
    try:
        queue = await _fill(broker, stage, 50)
    finally:
        await broker.close()

    broker = await _broker(rabbitmq_url, new)
    try:
        with pytest.raises(ConfigError) as caught:
            await broker.declare_work_queue(stage)
    finally:
        await broker.close()
    error = caught.value
    assert error.reason == "queue_type_mismatch"
    assert error.details["command"] == f"imgpipe queues migrate --exchange {stage}"
    assert error.details["queue"] in (queue, topology(queue).dead_letter_queue)
    assert f"`imgpipe queues migrate --exchange {stage}`" in error.message

    code, report = await _migrate(rabbitmq_url, new, stage)
    assert code == 0, report
    assert f"{queue}: moved 50 message(s) to {queue}.migrating" in report
    assert await _queue_type(rabbitmq_url, stage) == new
    again, report = await _migrate(rabbitmq_url, new, stage)
    assert again == 0 and "already" in report

    broker = await _broker(rabbitmq_url, new)
    try:
        await broker.declare_work_queue(stage)
        assert await broker.queue_depth(queue) == 50
        letters = await broker.dead_letters(queue, 10)
        assert sorted(d.job_id or "" for d in letters) == ["dead0", "dead1"]
        seen: list[Delivery] = []
        got = asyncio.Event()

        async def take(delivery: Delivery) -> None:
            seen.append(delivery)
            if len(seen) == 50:
                got.set()

        consumer = await broker.consume(queue, take, prefetch=10, retry=POLICY)
        await asyncio.wait_for(got.wait(), 30)
        await consumer.stop(grace=1)
        assert sorted(json.loads(d.body)["job_id"] for d in seen) == sorted(
            f"job{n}" for n in range(50))
        assert sorted(d.headers["x-own"] for d in seen) == list(range(50))
        await broker.publish(stage, b'{"job_id": "after"}', message_id="after")  # bound again
        assert await broker.queue_depth(queue) == 1
    finally:
        await broker.close()


async def test_migration_waits_for_consumers_to_stop(rabbitmq_url: str, stage: str) -> None:
    broker = await _broker(rabbitmq_url, "classic")
    try:
        queue = await broker.declare_work_queue(stage)
        hold = asyncio.Event()

        async def slow(delivery: Delivery) -> None:
            await hold.wait()

        consumer = await broker.consume(queue, slow, prefetch=1, retry=POLICY)
        code, _ = await _migrate(rabbitmq_url, "quorum", stage)
        assert code == 1
        hold.set()
        await consumer.stop(grace=1)
    finally:
        await broker.close()
    assert await _queue_type(rabbitmq_url, stage) == "classic"


async def test_a_message_returned_past_the_delivery_limit_is_dead_lettered(
    rabbitmq_url: str, stage: str
) -> None:
    """A message no consumer ever settles (it kills every runner that takes it) goes to
    the dead-letter queue after ``AMQP_DELIVERY_LIMIT`` returns, and `imgpipe dlq`
    shows why and can replay it."""
    broker = AmqpBroker(rabbitmq_url, name="imgpipe-test-queues",
                        shape=QueueShape("quorum", delivery_limit=2))
    await broker.connect()
    try:
        queue = await broker.declare_work_queue(stage)
        await broker.publish(stage, json.dumps({"job_id": "crashes"}).encode(),
                             message_id="crashes")
        async with await aio_pika.connect(rabbitmq_url) as connection:
            for _ in range(3):  # each "runner" dies holding it: its channel closes unsettled
                channel = await connection.channel()
                taken = await (await channel.get_queue(queue)).get(timeout=5, fail=False)
                assert taken is not None and taken.message_id == "crashes"
                await channel.close()
            channel = await connection.channel()
            assert await (await channel.get_queue(queue)).get(fail=False) is None

        async def dead_letters() -> list[dict[str, object]]:
            while not (letters := await broker.dead_letters(queue, 10)):
                await asyncio.sleep(0.1)
            return [letter.as_dict() for letter in letters]

        [letter] = await asyncio.wait_for(dead_letters(), 10)
        assert letter["job_id"] == "crashes" and letter["reason"] == "delivery_limit"
        replayed = await broker.replay_dead_letters(queue, 10)
        assert [r.message_id for r in replayed] == ["crashes"]
        assert await broker.queue_depth(queue) == 1
    finally:
        await broker.close()
