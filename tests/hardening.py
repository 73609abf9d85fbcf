"""An upload service over embedded backends, for the hardening tests (issue 16).

``Service.start(**settings)`` serves ``create_app`` on a real loopback port
with real embedded broker, object store and provenance store; ``record``
stores provenance events through the real recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.broker.protocol import Delivery
from imgpipe.domain.events import ProvenanceEvent, provenance_event_id
from imgpipe.provenance.recorder import Recorder
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.upload.app import create_app
from imgpipe.upload.context import Backends
from imgpipe.upload.service import connect_backends, new_backends
from imgpipe.upload.settings import UploadSettings


class Service:
    def __init__(self, tmp_path: Path, stack: AsyncExitStack) -> None:
        self._tmp = tmp_path
        self._stack = stack
        self.settings = UploadSettings()
        self.backends: Backends | None = None

    async def start(self, **overrides: Any) -> TestClient[Any, Any]:
        self.settings = UploadSettings(
            amqp_url=embedded_url(self._tmp / "broker"), s3_url=embedded_url(self._tmp / "objects"),
            couchdb_url=embedded_url(self._tmp / "provenance"), **overrides)
        if self.backends is None:
            self.backends = new_backends(self.settings)
            self._stack.push_async_callback(self.backends.broker.close)
            self._stack.push_async_callback(self.backends.store.close)
            self._stack.push_async_callback(self.backends.provenance.close)
            await connect_backends(self.settings, self.backends)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(self.settings, self.backends)))
        await self._stack.enter_async_context(client)
        return client

    async def record_uploads(self) -> None:
        """Store the provenance events uploads publish, as the provenance service would."""
        assert self.backends is not None
        queue = await self.backends.broker.declare_work_queue(self.settings.amqp_exchange_prov)
        consumer = await self.backends.broker.consume(
            queue, Recorder(self.backends.provenance).handle, prefetch=4)
        self._stack.push_async_callback(consumer.stop, 5)

    async def received(self, job_id: str) -> dict[str, Any]:
        """The job's 'received' record, once the recorder stored it."""
        assert self.backends is not None
        for _ in range(500):
            doc = await self.backends.provenance.get(
                provenance_event_id(job_id, "upload", "job.received"))
            if doc is not None:
                return doc
            await asyncio.sleep(0.02)
        raise AssertionError(f"job {job_id} has no 'received' record")

    async def record(self, events: list[ProvenanceEvent]) -> None:
        assert self.backends is not None
        recorder = Recorder(self.backends.provenance)
        for ev in events:
            await recorder.handle(Delivery(body=ev.to_bytes(), message_id=ev.event_id,
                                           redelivered=False))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with AsyncExitStack() as stack:
        yield Service(tmp_path, stack)


async def healthz_latencies(client: TestClient[Any, Any], busy: asyncio.Task[Any]) -> list[float]:
    """Seconds each /healthz took, asked every 20 ms while ``busy`` runs (at least 3 probes)."""
    latencies: list[float] = []
    while not busy.done() or len(latencies) < 3:
        started = time.perf_counter()
        resp = await client.get("/healthz")
        assert resp.status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return latencies
