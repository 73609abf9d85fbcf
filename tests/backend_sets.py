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

import pytest

from imgpipe.broker.open import open_broker
from imgpipe.broker.protocol import Broker
from imgpipe.provstore.open import open_provenance_store
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import AmqpSettings, CouchSettings, S3Settings, load
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.storage.open import open_object_store
from imgpipe.storage.protocol import ObjectStore
from imgpipe.testing.names import RunNames

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
    with the exchanges, buckets and database of the run ``name`` (:class:`RunNames`)."""
    names = RunNames(name).env()
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


#: Retry delays broker tests may use (their retry queues are removed after the test).
TEST_DELAYS = (0.05, 0.1)


@pytest.fixture
async def broker(backend_env: dict[str, str], unique_name: str) -> AsyncIterator[Broker]:
    """A broker of the backend set; tests use the exchanges named in ``backend_env``
    and, for a second queue, ``RunNames(unique_name).extra_queue``."""
    opened = await open_broker(settings_of(AmqpSettings, backend_env), name=unique_name)
    try:
        yield opened
    finally:
        await opened.close()
        if not backend_env["AMQP_URL"].startswith("file:"):
            await RunNames(unique_name).remove(backend_env["AMQP_URL"], delays=TEST_DELAYS)


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
