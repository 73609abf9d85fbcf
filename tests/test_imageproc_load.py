"""Load and lifecycle: 429 with Retry-After, the time limit, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.imageproc import create_app, workers
from imgpipe.imageproc.service import POOL
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.testing.names import run_name
from imgpipe.testing.processes import ServiceProcesses, wait_answering
from tests.images import image_bytes


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold every worker inside ``process`` until the event is set."""
    release = threading.Event()
    real = workers.process

    def held(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(workers, "process", held)
    yield release
    release.set()


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_full_queue_answers_429_with_retry_after(gate: threading.Event) -> None:
    settings = ImageprocSettings(imageproc_workers=1, imageproc_queue=1)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        data = image_bytes(64, 64)
        first = asyncio.create_task(client.post("/process", data=data))
        second = asyncio.create_task(client.post("/process", data=data))
        await _until(lambda: app[POOL].admitted == 2)
        refused = await client.post("/process", data=data)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"]["reason"] == "overloaded"
        gate.set()
        assert [(await t).status for t in (first, second)] == [200, 200]
        metrics = await (await client.get("/metrics")).text()
        assert 'imgpipe_imageproc_requests_total{outcome="overloaded"}' in metrics


async def test_time_limit_answers_504_and_stops_libvips() -> None:
    # The slow pipeline takes tens of seconds; the limit leaves a small image
    # a wide margin even on a loaded machine.
    settings = ImageprocSettings(imageproc_workers=1, imageproc_deadline=1.5)
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        slow = await client.post(
            "/process",
            params={"pipeline": "blur:100/blur:100/blur:100/blur:100/format:png"},
            data=image_bytes(1500, 1500, ".png"),
        )
        assert slow.status == 504
        assert (await slow.json())["error"]["reason"] == "timeout"
        await _until(lambda: app[POOL].admitted == 0)
        fast = await client.post("/process", data=image_bytes(64, 64))
        assert fast.status == 200


async def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    processes = ServiceProcesses(run_name(), {}, tmp_path)
    proc = processes.start("imageproc", IMAGEPROC_HOST="127.0.0.1")
    base = processes.url("imageproc")
    try:
        await wait_answering(f"{base}/healthz", proc=proc)
        async with aiohttp.ClientSession() as session:

            async def in_flight() -> float:
                async with session.get(f"{base}/metrics") as resp:
                    for line in (await resp.text()).splitlines():
                        if line.startswith("imgpipe_imageproc_in_flight "):
                            return float(line.split()[1])
                return 0.0

            request = asyncio.create_task(
                session.post(
                    f"{base}/process",
                    params={"pipeline": "blur:20/format:png"},
                    data=image_bytes(1200, 1200, ".png"),
                )
            )
            for _ in range(500):
                if await in_flight() >= 1 or request.done():
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            resp = await request
            assert resp.status == 200
            assert len(await resp.read()) > 0
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        processes.stop_all()
