"""Pytest plugin: real servers for the test session, on free loopback ports.

Loaded from ``tests/conftest.py``. Session-scoped fixtures start private S3 (SeaweedFS)
and CouchDB API (pouchdb-server) servers under a temporary state dir and stop them at
the end; ``rabbitmq_url`` uses the broker on 127.0.0.1:5672, or starts a private one.
A test may ``stop()`` and ``start()`` a server (same port, same data); a server left
stopped by a test is started again after that test.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SERVICES_PATH = Path(__file__).resolve().parent.parent / "scripts" / "services.py"


def _load_services() -> ModuleType:
    name = "imgpipe_dev_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVICES_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


services = _load_services()
"""``scripts/services.py`` as a module: ``services.S3Server``, ``services.start_s3`` ..."""

_restartable: list[Any] = []


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's state dir: one subdir per server (pid, log, data)."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def rabbitmq_server(services_dir: Path) -> Iterator[Any]:
    """The broker (``services.RabbitMQServer``): url, user, password, port, started."""
    server = services.ensure_rabbitmq(services_dir / "rabbitmq", fallback_ports="auto")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_url(rabbitmq_server: Any) -> str:
    """AMQP URL with credentials, e.g. ``amqp://guest:guest@127.0.0.1:5672/``."""
    url: str = rabbitmq_server.url
    return url


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[Any]:
    """A private SeaweedFS S3 server (``services.S3Server``).

    Attributes: url, access_key, secret_key, region, port, ports, pid, running, data_dir;
    methods stop(), start(), env().
    """
    server = services.start_s3(services_dir / "s3", "auto", die_with_parent=True)
    _restartable.append(server)
    yield server
    _restartable.remove(server)
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit


@pytest.fixture(scope="session")
def couchdb_server(services_dir: Path) -> Iterator[Any]:
    """A private pouchdb-server (``services.CouchDBServer``) with an admin user.

    Attributes: url (no credentials), user, password, port, pid, running, data_dir;
    methods stop(), start(), env(), auth_headers().
    """
    server = services.start_couchdb(services_dir / "couchdb", "auto", die_with_parent=True)
    _restartable.append(server)
    yield server
    _restartable.remove(server)
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit


@pytest.fixture(autouse=True)
def _restart_stopped_servers() -> Iterator[None]:
    """Start again any session server a test stopped and did not restart."""
    yield
    for server in _restartable:
        if not server.running:
            server.start()


@pytest.fixture
def unique_name() -> str:
    """A fresh name for a queue, exchange, bucket or database: ``t-<8 hex digits>``."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def private_rabbitmq_server(services_dir: Path) -> Iterator[Any]:
    """A broker of the session's own (``services.RabbitMQServer``), for tests that stop
    and restart it: url, user, password, port, pid; stop(), start(). Takes 5-15 s to start.
    """
    server = services.start_rabbitmq(services_dir / "private-rabbitmq", "auto")
    _restartable.append(server)
    yield server
    _restartable.remove(server)
    server.stop(grace=0)  # its data is thrown away: no need to wait for a clean exit
