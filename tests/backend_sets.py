"""Pytest plugin: the same tests against both backend sets.

``backend_set`` is ``"embedded"`` (broker, objects and provenance under a
temporary directory, no server) or ``"servers"`` (RabbitMQ, S3 and CouchDB
from :mod:`tests.servers`). ``backend_env`` gives the environment variables
that select it, with names unique to the test; ``broker``, ``object_store``
and ``provenance_store`` are opened from them by each kind's opener
(``open_broker``, ``open_object_store``, ``open_provenance_store``), exactly
as the services open theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from imgpipe.broker.open import open_broker
from imgpipe.broker.policy import DEFAULT_DELAYS
from imgpipe.broker.protocol import Broker
from imgpipe.broker.topology import topology, work_queue_name
from imgpipe.provstore.open import open_provenance_store
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import AmqpSettings, CouchSettings, S3Settings, load
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.storage.open import open_object_store
from imgpipe.storage.protocol import ObjectStore

BACKEND_SETS = ("embedded", "servers")


@pytest.fixture(params=BACKEND_SETS)
def backend_set(request: pytest.FixtureRequest) -> str:
    """Which backend set this run of the test uses."""
    return str(request.param)


def embedded_env(data_dir: Path) -> dict[str, str]:
    """Variables selecting the embedded backends kept under ``data_dir``."""
    return {
        "AMQP_URL": embedded_url(data_dir / "broker"),
        "S3_URL": embedded_url(data_dir / "objects"),
        "COUCHDB_URL": embedded_url(data_dir / "provenance"),
    }


def backend_env_for(
    backend_set: str, request: pytest.FixtureRequest, data_dir: Path, name: str
) -> dict[str, str]:
    """Environment variables selecting ``backend_set`` (embedded ones under ``data_dir``),
    with exchanges, buckets and database named after ``name``."""
    names = {
        "AMQP_EXCHANGE_SUBSCRIBE": f"{name}-uploaded",
        "AMQP_EXCHANGE_PUBLISH": f"{name}-processed",
        "AMQP_EXCHANGE_PROV": f"{name}-provenance",
        "S3_INPUT_BUCKET": f"{name}-input",
        "S3_OUTPUT_BUCKET": f"{name}-output",
        "COUCHDB_DB": name.replace("-", "_"),
    }
    if backend_set == "embedded":
        return embedded_env(data_dir) | names
    rabbitmq = request.getfixturevalue("rabbitmq_server")
    s3 = request.getfixturevalue("s3_server")
    couchdb = request.getfixturevalue("couchdb_server")
    return rabbitmq.env() | s3.env() | couchdb.env() | names


@pytest.fixture
def backend_env(
    backend_set: str, request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> dict[str, str]:
    """Environment variables selecting ``backend_set``, with exchanges, buckets and
    database named for this test alone."""
    return backend_env_for(backend_set, request, tmp_path / "data", unique_name)


def settings_of(cls: type[Any], env: dict[str, str]) -> Any:
    """Settings built from ``env`` alone (the process environment left out)."""
    return load(cls, **{k.lower(): v for k, v in env.items()})


async def delete_amqp_names(url: str, exchanges: list[str], queues: list[str]) -> None:
    """Remove a test's queues and exchanges from a shared RabbitMQ."""
    connection = await aio_pika.connect(url)
    async with connection:
        for kind, name in [("queue", q) for q in queues] + [("exchange", e) for e in exchanges]:
            channel = await connection.channel()
            try:
                if kind == "queue":
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except aio_pika.exceptions.AMQPError:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()


#: Retry delays broker tests may use (their retry queues are removed after the test).
TEST_DELAYS = (0.05, 0.1)


def extra_queue(unique_name: str) -> str:
    """A second queue name a broker test may use (removed after the test)."""
    return f"{unique_name}-extra"


@pytest.fixture
async def broker(backend_env: dict[str, str], unique_name: str) -> AsyncIterator[Broker]:
    """A broker of the backend set; tests use the exchanges named in ``backend_env``
    and, for a second queue, :func:`extra_queue`."""
    opened = await open_broker(settings_of(AmqpSettings, backend_env), name=unique_name)
    try:
        yield opened
    finally:
        await opened.close()
        if not backend_env["AMQP_URL"].startswith("file:"):
            exchanges = [backend_env[k] for k in backend_env if k.startswith("AMQP_EXCHANGE_")]
            queues = [work_queue_name(e) for e in exchanges] + [extra_queue(unique_name)]
            names = [topology(q) for q in queues]
            delays = set(DEFAULT_DELAYS) | set(TEST_DELAYS)
            queues += [n.dead_letter_queue for n in names]
            queues += [n.retry_queue(d) for n in names for d in delays]
            exchanges += [n.dead_letter_exchange for n in names]
            await delete_amqp_names(backend_env["AMQP_URL"], exchanges, queues)


@pytest.fixture
async def object_store(backend_env: dict[str, str]) -> AsyncIterator[ObjectStore]:
    """An object store of the backend set, with its input and output buckets made."""
    settings = settings_of(S3Settings, backend_env)
    store = await open_object_store(
        settings, buckets=(settings.s3_input_bucket, settings.s3_output_bucket)
    )
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def provenance_store(backend_env: dict[str, str]) -> AsyncIterator[ProvenanceStore]:
    """A fresh provenance database of the backend set."""
    store = await open_provenance_store(settings_of(CouchSettings, backend_env))
    try:
        yield store
    finally:
        await store.close()
