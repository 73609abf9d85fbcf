"""Delivery guarantees of the RabbitMQ adapter: retries with back-off, bounded attempts,
dead-letter queues, holding while a backend is down, and the `imgpipe dlq` commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aio_pika
import aio_pika.abc
import pytest
from prometheus_client import REGISTRY

from imgpipe.broker.policy import (
    ATTEMPT,
    HISTORY,
    REASON,
    Action,
    RetryPolicy,
    decide,
    parse_delays,
    replay_headers,
)
from imgpipe.broker.protocol import Delivery
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.broker.rabbitmq_consumer import AmqpConsumer
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import PermanentError, TransientError, Unavailable

FAST = RetryPolicy((0.05, 0.1, 0.2), hold_max_delay=0.2)


def test_decisions() -> None:
    assert decide(None, 1, FAST).action is Action.ACK
    assert decide(PermanentError("no", reason="bad"), 1, FAST).action is Action.DEAD_LETTER
    retry = decide(TransientError("5xx", reason="imageproc_error"), 1, FAST)
    assert (retry.action, retry.delay, retry.reason) == (Action.RETRY, 0.05, "imageproc_error")
    assert decide(TransientError("5xx"), 3, FAST).delay == 0.2
    final = decide(TransientError("5xx", reason="imageproc_error"), 4, FAST)
    assert final.action is Action.DEAD_LETTER and final.reason == "imageproc_error"
    assert "4 attempts" in (final.message or "")
    held = decide(Unavailable("down"), 4, FAST, holds=10)
    assert held.action is Action.HOLD and held.delay == 0.2
    assert decide(Unavailable("down"), 1, RetryPolicy()).delay == 0.5
    assert decide(Unavailable("busy", retry_after=3), 1, RetryPolicy()).delay == 3
    assert decide(ValueError("bug"), 1, FAST).reason == "internal_error"
    assert RetryPolicy().max_attempts == 5
    assert parse_delays("1, 5,30") == (1.0, 5.0, 30.0)
    with pytest.raises(ValueError):
        parse_delays("-1")


def test_replayed_messages_carry_their_history() -> None:
    dead = {ATTEMPT: 4, REASON: "imageproc_error", "x-imgpipe-error": "gave up",
            "x-imgpipe-dead-lettered-at": "2026-01-01T00:00:00+00:00"}
    once = replay_headers(dead)
    assert once[ATTEMPT] == 1 and once["x-imgpipe-replays"] == 1 and REASON not in once
    twice = replay_headers(once | {REASON: "timeout", ATTEMPT: 2})
    history = json.loads(twice[HISTORY])
    assert [h["reason"] for h in history] == ["imageproc_error", "timeout"]
    assert twice["x-imgpipe-replays"] == 2


@pytest.fixture
def broker(rabbitmq_broker: AmqpBroker) -> AmqpBroker:
    """This module's broker is RabbitMQ (the session's)."""
    return rabbitmq_broker


async def _delete_topology(rabbitmq_url: str, exchange: str, policy: RetryPolicy = FAST) -> None:
    queue = work_queue_name(exchange)
    names = topology(queue)
    async with await aio_pika.connect(rabbitmq_url) as conn:
        channel = await conn.channel()
        for name in [queue, names.dead_letter_queue,
                     *(names.retry_queue(d) for d in policy.delays)]:
            await channel.queue_delete(name)
        for name in (exchange, names.dead_letter_exchange):
            await channel.exchange_delete(name)


@pytest.fixture
async def stage(rabbitmq_url: str, unique_name: str) -> AsyncIterator[str]:
    yield unique_name
    await _delete_topology(rabbitmq_url, unique_name)


async def _dead_letters(broker: AmqpBroker, exchange: str) -> list[dict[str, object]]:
    return [d.as_dict() for d in await broker.dead_letters(work_queue_name(exchange), 100)]


async def test_transient_failures_retry_then_dead_letter(
    broker: AmqpBroker, stage: str, rabbitmq_url: str
) -> None:
    queue = await broker.declare_work_queue(stage)
    attempts: dict[str, list[int]] = {}
    finished = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        body = json.loads(delivery.body)
        attempts.setdefault(body["name"], []).append(delivery.attempt)
        if body["name"] == "flaky" and delivery.attempt < 3:
            raise TransientError("imageproc answered 502", reason="imageproc_error")
        if body["name"] == "broken":
            if delivery.final:
                finished.set()
            raise TransientError("imageproc answered 500", reason="imageproc_error")
        if body["name"] == "poison":
            raise PermanentError("not an image", reason="undecodable")

    for name in ("ok", "flaky", "broken", "poison"):
        await broker.publish(stage, json.dumps({"name": name, "job_id": name}).encode(),
                             message_id=name)
    consumer = await broker.consume(queue, handler, prefetch=4, retry=FAST)
    await asyncio.wait_for(finished.wait(), 20)

    async def settled() -> list[dict[str, object]]:
        while len(letters := await _dead_letters(broker, stage)) < 2:
            await asyncio.sleep(0.1)
        return letters

    letters = await asyncio.wait_for(settled(), 10)
    await consumer.stop(grace=2)
    assert attempts == {"ok": [1], "flaky": [1, 2, 3], "broken": [1, 2, 3, 4], "poison": [1]}
    by_job = {str(letter["job_id"]): letter for letter in letters}
    assert set(by_job) == {"broken", "poison"}
    assert by_job["broken"]["reason"] == "imageproc_error"
    assert by_job["broken"]["attempts"] == 4
    assert "gave up after 4 attempts" in str(by_job["broken"]["error"])
    assert by_job["poison"]["reason"] == "undecodable" and by_job["poison"]["attempts"] == 1
    depths = await broker.queue_depths()
    assert depths[queue] == 0 and depths[topology(queue).dead_letter_queue] == 2


async def test_unavailable_backend_holds_without_spending_attempts(
    broker: AmqpBroker, stage: str
) -> None:
    queue = await broker.declare_work_queue(stage)
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.attempt)
        if len(seen) < 8:  # more failures than the policy has attempts
            raise Unavailable("CouchDB is unavailable", reason="provenance_unavailable")
        done.set()

    await broker.publish(stage, b'{"job_id": "held"}', message_id="held")
    consumer = await broker.consume(queue, handler, prefetch=1,
                                    retry=RetryPolicy((0.05,), hold_max_delay=0.05))
    await asyncio.wait_for(done.wait(), 20)
    await consumer.stop(grace=2)
    assert seen == [1] * 8


async def test_stopping_returns_unfinished_work(
    broker: AmqpBroker, stage: str, rabbitmq_url: str
) -> None:
    queue = await broker.declare_work_queue(stage)
    started = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(60)

    await broker.publish(stage, b'{"job_id": "slow"}', message_id="slow")
    consumer = await broker.consume(queue, slow, prefetch=1, retry=FAST)
    await asyncio.wait_for(started.wait(), 10)
    await consumer.stop(grace=0.2)

    second = AmqpBroker(rabbitmq_url)
    await second.connect()
    got: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()

    async def take(delivery: Delivery) -> None:
        if not got.done():
            got.set_result(delivery)

    again = await second.consume(queue, take, prefetch=1, retry=FAST)
    delivery = await asyncio.wait_for(got, 10)
    await again.stop(grace=1)
    await second.close()
    assert delivery.redelivered and delivery.attempt == 1


async def test_publish_is_never_assumed(rabbitmq_url: str, stage: str) -> None:
    broker = AmqpBroker(rabbitmq_url, publish_deadline=0.5)
    with pytest.raises(Unavailable):  # not connected: reported, not dropped
        await broker.publish(stage, b"x", message_id="x")
    await broker.connect()
    try:
        await broker.declare_exchange(stage)
        with pytest.raises(TransientError) as caught:  # no queue bound: returned
            await broker.publish(stage, b"x", message_id="x")
        assert caught.value.reason == "unroutable"
    finally:
        await broker.close()
    unreachable = AmqpBroker("amqp://guest:guest@127.0.0.1:9/")
    with pytest.raises(Unavailable):
        await unreachable.connect()


def _dlq(rabbitmq_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"AMQP_URL": rabbitmq_url}
    return subprocess.run([sys.executable, "-m", "imgpipe.cli", "dlq", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60)


async def test_dlq_command_on_rabbitmq(broker: AmqpBroker, stage: str, rabbitmq_url: str) -> None:
    """The command itself; every action is checked on both brokers in test_backend_contract."""
    queue = await broker.declare_work_queue(stage)

    async def refuse(delivery: Delivery) -> None:
        raise PermanentError("cannot read it", reason="undecodable")

    await broker.publish(stage, b'{"job_id": "job0", "kind": "uploaded"}', message_id="m0")
    consumer = await broker.consume(queue, refuse, prefetch=1, retry=FAST)
    while len(await _dead_letters(broker, stage)) < 1:
        await asyncio.sleep(0.1)
    await consumer.stop(grace=1)

    listed = await asyncio.to_thread(_dlq, rabbitmq_url, "list", "--exchange", stage)
    assert listed.returncode == 0, listed.stderr
    assert f"{stage}: 1 dead-lettered" in listed.stdout
    shown = await asyncio.to_thread(_dlq, rabbitmq_url, "show", "--exchange", stage, "--json")
    assert [letter["job_id"] for letter in json.loads(shown.stdout)] == ["job0"]
    missing = await asyncio.to_thread(_dlq, rabbitmq_url, "show", "--exchange", f"{stage}-none")
    assert missing.returncode == 1 and "no dead-letter queue" in missing.stderr
    down = await asyncio.to_thread(_dlq, "amqp://guest:guest@127.0.0.1:9/", "list")
    assert down.returncode == 1 and "RabbitMQ is unreachable" in down.stderr


async def test_deliveries_that_never_arrive_come_back_to_an_idle_consumer(
    rabbitmq_url: str, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quorum queue may count messages as delivered that never reach the consumer (its
    leader died in between); with the prefetch used up by them, nothing else arrives.
    Losing the first two deliveries on their way reproduces that: the idle consumer
    subscribes again and all three messages are handled."""
    lost: list[str] = []
    on_message = AmqpConsumer._on_message

    async def losing_the_first_two(self: AmqpConsumer,
                                   message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if len(lost) < 2:
            lost.append(str(message.message_id))  # neither handled nor settled
            return
        await on_message(self, message)

    monkeypatch.setattr(AmqpConsumer, "_on_message", losing_the_first_two)
    broker = AmqpBroker(rabbitmq_url, idle_renew=1.0)
    await broker.connect()
    queue = await broker.declare_work_queue(stage)
    handled: list[str] = []
    all_handled = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        handled.append(str(delivery.message_id))
        if len(set(handled)) == 3:
            all_handled.set()

    for name in ("a", "b", "c"):
        await broker.publish(stage, json.dumps({"job_id": name}).encode(), message_id=name)
    consumer = await broker.consume(queue, handler, prefetch=2, retry=FAST)
    try:
        await asyncio.wait_for(all_handled.wait(), 20)
    finally:
        await consumer.stop(grace=1)
        await broker.close()
    assert lost == ["a", "b"] and sorted(set(handled)) == ["a", "b", "c"]
    assert (await _depth(rabbitmq_url, queue)) == 0
    # What an operator sees: the two that came back are counted (and logged as a warning).
    assert REGISTRY.get_sample_value("imgpipe_consumer_recovered_total", {"queue": queue}) == 2


async def _depth(rabbitmq_url: str, queue: str) -> int:
    async with await aio_pika.connect(rabbitmq_url) as conn:
        declared = await (await conn.channel()).declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
