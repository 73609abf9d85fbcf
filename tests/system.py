"""Running imgpipe's services for a test: real processes against the test servers.

``System`` starts ``imgpipe <service>`` subprocesses with an environment of
their own (unique exchanges, buckets and database per test, free ports) and
stops them at the end. Tests may kill and restart a service mid-test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.servers import services

IMGPIPE = [sys.executable, "-m", "imgpipe.cli"]
SERVICES = ("imageproc", "provenance", "upload-server", "runner")
HTTP_PORT_VARS = {
    "upload-server": "UPLOAD_PORT",
    "imageproc": "IMAGEPROC_PORT",
    "runner": "RUNNER_PORT",
    "provenance": "PROVENANCE_PORT",
}


class System:
    """The four services of one test, with their settings."""

    def __init__(self, name: str, rabbitmq_url: str, s3: Any, couch: Any, logs: Path) -> None:
        self.name = name
        self.logs = logs
        upload, imageproc, runner, prov = services.free_ports(4)
        self.ports = {"upload-server": upload, "imageproc": imageproc,
                      "runner": runner, "provenance": prov}
        self.env: dict[str, str] = {
            "AMQP_URL": rabbitmq_url,
            "AMQP_EXCHANGE_SUBSCRIBE": f"{name}.uploaded",
            "AMQP_EXCHANGE_PUBLISH": f"{name}.processed",
            "AMQP_EXCHANGE_PROV": f"{name}.provenance",
            "S3_URL": s3.url,
            "S3_ACCESS_KEY": s3.access_key,
            "S3_SECRET_KEY": s3.secret_key,
            "S3_INPUT_BUCKET": f"{name}-in",
            "S3_OUTPUT_BUCKET": f"{name}-out",
            "COUCHDB_URL": couch.url,
            "COUCHDB_USER": couch.user,
            "COUCHDB_PASSWORD": couch.password,
            "COUCHDB_DB": f"{name}-prov",
            "IMAGEPROC_URL": f"http://127.0.0.1:{imageproc}",
            "SHUTDOWN_GRACE": "5",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def upload_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['upload-server']}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, service: str, *, key: str | None = None, **extra: str) -> subprocess.Popen[bytes]:
        """Start ``imgpipe <service>``; ``key`` names a second instance (e.g. 'runner2')."""
        key = key or service
        env = os.environ | self.env | {HTTP_PORT_VARS[service]: str(self.ports.get(key, 0))} | extra
        log = open(self.logs / f"{key}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*IMGPIPE, service], env=env, stdout=log, stderr=log)
        log.close()
        self.procs[key] = proc
        return proc

    def stop(self, key: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        proc = self.procs.pop(key)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for key in list(self.procs):
            self.stop(key)

    def log(self, key: str) -> str:
        path = self.logs / f"{key}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_ready(self, key: str, timeout: float = 30) -> None:
        """Wait until the service's /readyz answers 200."""
        url = f"http://127.0.0.1:{self.ports[key]}/readyz"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                proc = self.procs[key]
                if proc.poll() is not None:
                    raise AssertionError(f"{key} exited with {proc.returncode}:\n{self.log(key)[-3000:]}")
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key} not ready after {timeout}s:\n{self.log(key)[-3000:]}")
                await asyncio.sleep(0.1)

    async def start_all(self) -> None:
        for service in SERVICES:
            self.start(service)
        await asyncio.gather(*(self.wait_ready(k) for k in SERVICES))

    def start_all_sync(self, timeout: float = 60) -> None:
        """Start the four services and wait (blocking) until each is ready."""
        for service in SERVICES:
            self.start(service)
        deadline = time.monotonic() + timeout
        for key in SERVICES:
            while True:
                if self.procs[key].poll() is not None:
                    raise AssertionError(f"{key} exited:\n{self.log(key)[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{self.url(key)}/readyz", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key} not ready:\n{self.log(key)[-3000:]}")
                time.sleep(0.1)


@pytest.fixture
def system_env(
    unique_name: str, rabbitmq_url: str, s3_server: Any, couchdb_server: Any, tmp_path: Path
) -> Iterator[System]:
    """A :class:`System` configured for this test, nothing started yet."""
    system = System(unique_name, rabbitmq_url, s3_server, couchdb_server, tmp_path)
    try:
        yield system
    finally:
        system.stop_all()


@pytest.fixture
async def system(system_env: System) -> AsyncIterator[System]:
    """All four services running for this test alone (for tests that stop or break them)."""
    await system_env.start_all()
    yield system_env


@pytest.fixture(scope="module")
def shared_system(
    rabbitmq_url: str, s3_server: Any, couchdb_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    """All four services, shared by the tests of one module (each test uses its own jobs)."""
    name = f"m-{uuid.uuid4().hex[:8]}"
    system = System(name, rabbitmq_url, s3_server, couchdb_server, tmp_path_factory.mktemp(name))
    try:
        system.start_all_sync()
        yield system
    finally:
        system.stop_all()


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
