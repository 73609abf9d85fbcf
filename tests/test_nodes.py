"""Several broker addresses: ``AMQP_URL`` as a comma-separated list of nodes.

A node dying is what the client sees when its TCP connections are cut; here a
loopback forwarder in front of the one RabbitMQ plays the node that dies (the
three-node cluster test, tests/test_cluster.py, kills real nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from imgpipe.broker.open import open_broker
from imgpipe.broker.protocol import Delivery
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.errors import ConfigError
from imgpipe.runtime.config import AmqpSettings, load
from imgpipe.testing.names import remove_amqp_names


class Forwarder:
    """A loopback port forwarding to ``target``; :meth:`cut` drops every connection
    and stops listening, as a dead node would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def stage(rabbitmq_url: str, unique_name: str) -> AsyncIterator[str]:
    yield unique_name
    queue = work_queue_name(unique_name)
    names = topology(queue)
    await remove_amqp_names(rabbitmq_url, [unique_name, names.dead_letter_exchange],
                            [queue, names.dead_letter_queue,
                             *(names.retry_queue(d) for d in (1.0, 5.0, 30.0, 120.0))])


def test_amqp_url_takes_a_list_of_nodes() -> None:
    nodes = "amqp://guest:guest@127.0.0.1:5672/, amqps://guest:guest@127.0.0.1:5671/"
    assert load(AmqpSettings, amqp_url=nodes).broker_url() == nodes
    for wrong in ("file:///tmp/a,amqp://127.0.0.1/", "amqp://127.0.0.1/,http://127.0.0.1/"):
        with pytest.raises(ConfigError, match="AMQP_URL"):
            load(AmqpSettings, amqp_url=wrong)


async def test_clients_connect_to_the_first_node_that_answers(
    rabbitmq_url: str, stage: str
) -> None:
    dead = _with_port(rabbitmq_url, 9)
    broker = await open_broker(load(AmqpSettings, amqp_url=f"{dead},{rabbitmq_url}"),
                               name="imgpipe-test-nodes")
    try:
        await broker.declare_work_queue(stage)
        await broker.publish(stage, b"{}", message_id="m-1")
        await broker.check()
    finally:
        await broker.close()


async def test_a_client_moves_to_another_node_when_its_node_dies(
    rabbitmq_url: str, stage: str
) -> None:
    host, port = urlsplit(rabbitmq_url).hostname, urlsplit(rabbitmq_url).port
    assert host is not None and port is not None
    node = Forwarder(host, port)
    await node.start()
    url = f"{_with_port(rabbitmq_url, node.port)},{rabbitmq_url}"
    broker = await open_broker(load(AmqpSettings, amqp_url=url), name="imgpipe-test-nodes")
    seen: set[str] = set()
    all_seen = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.add(json.loads(delivery.body)["job_id"])
        if len(seen) == 40:
            all_seen.set()

    try:
        queue = await broker.declare_work_queue(stage)
        consumer = await broker.consume(queue, handler, prefetch=4)
        for n in range(20):
            await broker.publish(stage, json.dumps({"job_id": f"j{n}"}).encode(),
                                 message_id=f"j{n}")
        await node.cut()
        for n in range(20, 40):  # each waits for the move and its confirm
            await broker.publish(stage, json.dumps({"job_id": f"j{n}"}).encode(),
                                 message_id=f"j{n}")
        await asyncio.wait_for(all_seen.wait(), 30)
        await consumer.stop(grace=1)
        await broker.check()
    finally:
        await broker.close()
        await node.cut()
    assert seen == {f"j{n}" for n in range(40)}
