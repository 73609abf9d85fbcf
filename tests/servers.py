"""Pytest plugin: real servers for the test session, on free loopback ports.

Loaded from ``tests/conftest.py``; the servers come from :mod:`imgpipe.testing.servers`.
Session-scoped fixtures start private S3 (SeaweedFS) and CouchDB servers under a
temporary state dir and stop them at the end (which CouchDB: see
:mod:`imgpipe.testing.servers.couchdb`; the header of the test run names it);
and a RabbitMQ broker of the session's own (``rabbitmq_url``). A test may
``stop()`` and ``start()`` a server (same port, same data); a server left stopped by a
test is started again after that test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.testing.names import run_name
from imgpipe.testing.servers.base import start_on_free_ports
from imgpipe.testing.servers.couchdb import couchdb_choice, start_couchdb
from imgpipe.testing.servers.rabbitmq import RabbitMQServer, start_rabbitmq
from imgpipe.testing.servers.seaweedfs import S3Server

_restartable: list[Any] = []


def pytest_report_header() -> str:
    how, where = couchdb_choice()
    return {"url": "CouchDB: the running server at IMGPIPE_TEST_COUCHDB_URL",
            "release": f"CouchDB: Apache CouchDB from {where}"}.get(how, f"CouchDB: {where}")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's state dir: one subdir per server (pid, log, data)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def rabbitmq_server(services_dir: Path) -> Iterator[RabbitMQServer]:
    """The session's own broker on free ports: url, user, password, port, started.

    Not the broker a machine may already run on 5672: a clean broker per session keeps
    the tests from the queues earlier runs left there, and from that broker's health
    (one stopped answering mid-run here, and every later test failed)."""
    server = start_rabbitmq(services_dir / "rabbitmq")
    yield server
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_server: RabbitMQServer) -> str:
    """AMQP URL with credentials, e.g. ``amqp://guest:guest@127.0.0.1:5672/``."""
    return rabbitmq_server.url


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[S3Server]:
    """A private SeaweedFS S3 server: url, access_key, secret_key, region, env(),
    stop(), start()."""
    server = start_on_free_ports(lambda: S3Server(services_dir / "s3", die_with_parent=True))
    _restartable.append(server)
    yield server
    _restartable.remove(server)
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit


@pytest.fixture(scope="session")
def couchdb_server(services_dir: Path) -> Iterator[Any]:
    """The session's CouchDB with an admin user: url (no credentials), user, password,
    env(), auth_headers(); stop() and start() unless ``restartable`` is False."""
    server: Any = start_couchdb(services_dir / "couchdb", die_with_parent=True)
    if server.restartable:
        _restartable.append(server)
    yield server
    if server.restartable:
        _restartable.remove(server)
    server.stop(grace=5)


@pytest.fixture(autouse=True)
def _restart_stopped_servers() -> Iterator[None]:
    """Start again any session server a test stopped and did not restart."""
    yield
    for server in _restartable:
        if not server.running:
            server.start()


@pytest.fixture
async def rabbitmq_broker(rabbitmq_url: str, request: pytest.FixtureRequest
                          ) -> AsyncIterator[AmqpBroker]:
    """imgpipe's RabbitMQ broker, connected to the session's broker."""
    broker = AmqpBroker(rabbitmq_url, name=f"imgpipe-{request.module.__name__}")
    await broker.connect()
    yield broker
    await broker.close()


@pytest.fixture
def unique_name() -> str:
    """This test's run name (:func:`imgpipe.testing.names.run_name`): ``t-<8 hex digits>``."""
    return run_name("t")


@pytest.fixture(scope="session")
def private_rabbitmq_server(services_dir: Path) -> Iterator[RabbitMQServer]:
    """A broker of the session's own, for tests that stop and restart it: url, port, pid;
    stop(), start(). Takes 5-15 s to start."""
    server = start_rabbitmq(services_dir / "private-rabbitmq")
    _restartable.append(server)
    yield server
    _restartable.remove(server)
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit
