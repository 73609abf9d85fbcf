"""Every service starts and stops the same way: ``run_<service>(settings, *, stop, listening)``.

Each one, on the embedded backends and port 0, says where it listens, answers
/healthz there, becomes ready, and returns once its stop event is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgpipe.imageproc import run_imageproc
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.provenance.service import run_provenance
from imgpipe.provenance.settings import ProvenanceSettings
from imgpipe.runner.service import run_runner
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.config import load
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.upload.service import run_upload
from imgpipe.upload.settings import UploadSettings
from tests.system import wait_for

Run = Callable[..., Coroutine[Any, Any, None]]


def _cases(data: Path) -> dict[str, tuple[Run, Any]]:
    backends = {"amqp_url": embedded_url(data / "broker"), "s3_url": embedded_url(data / "objects"),
                "couchdb_url": embedded_url(data / "provenance")}
    return {
        "imageproc": (run_imageproc, load(ImageprocSettings, imageproc_port=0)),
        "runner": (run_runner, load(RunnerSettings, **backends, runner_port=0)),
        "provenance": (run_provenance, load(ProvenanceSettings, **backends, provenance_port=0)),
        "upload": (run_upload, load(UploadSettings, **backends, upload_port=0)),
    }


async def _ready(url: str) -> bool:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/readyz") as resp:
            return resp.status == 200


@pytest.mark.parametrize("service", ["imageproc", "runner", "provenance", "upload"])
async def test_run_answers_where_it_says_and_stops_on_its_event(
    service: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run, settings = _cases(tmp_path)[service]
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(settings, stop=stop, listening=listening.set_result))
    try:
        url = await asyncio.wait_for(listening, 30)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as resp:
                assert resp.status == 200
        if service != "runner":  # the runner is ready only once imageproc answers
            await wait_for(lambda: _ready(url), timeout=30)
    finally:
        stop.set()
    with caplog.at_level(logging.INFO, logger="imgpipe.runtime.service"):
        await asyncio.wait_for(task, 30)
    assert any(r.getMessage().endswith(" stopped") for r in caplog.records)


async def test_a_deprecated_variable_is_logged_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IMAGEPROC_TIMEOUT", "9")
    run, settings = _cases(tmp_path)["provenance"]
    _, runner_settings = _cases(tmp_path)["runner"]
    stop = asyncio.Event()
    stop.set()  # stops while starting: the line is logged before anything else
    with caplog.at_level(logging.WARNING, logger="imgpipe.runtime.service"):
        await asyncio.wait_for(run_runner(runner_settings, stop=stop), 30)
        await asyncio.wait_for(run(settings, stop=stop), 30)
    lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert lines == ["runner: IMAGEPROC_TIMEOUT is deprecated and will be removed in the next "
                     "release; it sets IMAGEPROC_CLIENT_TIMEOUT here: set that instead"]
