"""Pytest plugin: imgpipe's four services as processes for a test or a module.

The processes come from :class:`imgpipe.testing.processes.ServiceProcesses`, on the
session's servers (:mod:`tests.servers`), with the run's own names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgpipe.testing.names import run_name
from imgpipe.testing.processes import ServiceProcesses


def backends_env(rabbitmq_url: str, s3: Any, couch: Any) -> dict[str, str]:
    """The settings that select the session's servers."""
    return {"AMQP_URL": rabbitmq_url} | s3.env() | couch.env()


@pytest.fixture
def system_env(
    unique_name: str, rabbitmq_url: str, s3_server: Any, couchdb_server: Any, tmp_path: Path
) -> Iterator[ServiceProcesses]:
    """The services of this test, configured, none started yet."""
    with ServiceProcesses(unique_name, backends_env(rabbitmq_url, s3_server, couchdb_server),
                          tmp_path / "logs") as system:
        yield system


@pytest.fixture
async def system(system_env: ServiceProcesses) -> AsyncIterator[ServiceProcesses]:
    """All four services running for this test alone (for tests that stop or break them)."""
    await system_env.start_all()
    yield system_env


@pytest.fixture(scope="module")
def module_system(
    rabbitmq_url: str, s3_server: Any, couchdb_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServiceProcesses:
    """The services of one module, configured, none started yet; stopped after the module.
    A module's own fixture starts what it needs (and may change settings first)."""
    name = run_name("m")
    return ServiceProcesses(name, backends_env(rabbitmq_url, s3_server, couchdb_server),
                            tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def shared_system(module_system: ServiceProcesses) -> Iterator[ServiceProcesses]:
    """All four services, shared by the tests of one module (each test uses its own jobs)."""
    with module_system:
        module_system.start_all_sync()
        yield module_system


@pytest.fixture(scope="module")
def upload_only(module_system: ServiceProcesses) -> Iterator[ServiceProcesses]:
    """Only the upload service, shared by the tests of one module (no runner: jobs stay
    queued). A module may override ``module_system`` to change its settings."""
    with module_system:
        module_system.start("upload-server")
        asyncio.run(module_system.wait_ready("upload-server"))
        yield module_system


async def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll the async ``predicate`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
