"""`imgpipe dev`: the whole system in one command, on both backend sets.

The end-to-end scenarios of :mod:`tests.test_e2e` run here again, against
``imgpipe dev`` with the embedded backends (no URL configured, state under
``--data-dir``) and with the real servers (their URLs configured): the
``system`` fixture below replaces the four-process one for this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imgpipe.client.api import Client
from imgpipe.commands.dev import DevSettings
from imgpipe.runtime.fileurl import embedded_path
from imgpipe.testing.names import run_name
from imgpipe.testing.processes import DevProcess
from imgpipe.upload.service import run_upload
from imgpipe.upload.settings import UploadSettings
from tests.backend_sets import BACKEND_SETS, backend_env_for, settings_of
from tests.images import image_bytes
from tests.system import wait_for
from tests.test_e2e import (  # noqa: F401 - the shared scenarios, collected here too
    get_json,
    stores,
    test_bad_uploads_are_refused_and_nothing_is_stored,
    test_several_files_give_one_job_each,
    test_unknown_job_is_404,
    test_upload_is_processed_with_provenance,
)


@pytest.fixture
def dev(backend_set: str, backend_env: dict[str, str], tmp_path: Path) -> Iterator[DevProcess]:
    """``imgpipe dev`` for this test on ``backend_set``, not started yet."""
    with DevProcess(backend_env, tmp_path / "data", tmp_path / "logs",
                    embedded=backend_set == "embedded") as process:
        yield process


@pytest.fixture
async def system(dev: DevProcess) -> AsyncIterator[DevProcess]:
    """``imgpipe dev`` running for this test alone."""
    dev.start()
    await dev.wait_ready()
    yield dev


@pytest.fixture(scope="module", params=BACKEND_SETS)
def shared_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevProcess]:
    """``imgpipe dev`` shared by this module's tests on one backend set: the end-to-end
    scenarios of :mod:`tests.test_e2e` use it as their system."""
    name = run_name("m")
    base = tmp_path_factory.mktemp(name)
    env = backend_env_for(request.param, request, base / "data", name)
    with DevProcess(env, base / "data", base / "logs",
                    embedded=request.param == "embedded") as process:
        process.start()
        process.wait_ready_sync()
        yield process


async def _upload(url: str, count: int, pipeline: str = "resize:w=64/format:png",
                  width: int = 120) -> list[str]:
    files = [(f"img{n}.png", image_bytes(width + n, 90, ".png")) for n in range(count)]
    async with Client(url) as client:
        return [job["job_id"] for job in await client.upload_files(files, pipelines=[pipeline])]


async def _all_done(url: str, jobs: list[str], timeout: float = 90) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        views = [(await get_json(f"{url}/jobs/{job}"))[1] for job in jobs]
        assert not [v for v in views if v["status"] == "failed"], views
        return views if all(v["status"] == "done" for v in views) else None

    result: list[dict[str, Any]] = await wait_for(done, timeout=timeout)
    return result


async def test_it_says_where_to_open_the_page_and_where_data_is(system: DevProcess) -> None:
    out = system.output()
    assert f"open http://localhost:{system.port}" in out
    if system.embedded:
        assert f"{system.data_dir} (kept across restarts)" in out
        assert f"{system.data_dir / 'broker'} (embedded)" in out
        jobs = await _upload(system.upload_url, 1)
        [view] = await _all_done(system.upload_url, jobs)
        location = view["outputs"][0]["location"].removeprefix("s3://")
        saved = system.data_dir / "objects" / location
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == view["outputs"][0]["sha256"]
    else:
        assert "(RabbitMQ)" in out and "(S3)" in out and "(CouchDB)" in out
        assert "guest" not in out and "kept across restarts" not in out
    assert system.stop() == 0
    assert "imgpipe dev stopped" in system.output()


async def test_provenance_queries_answer_the_same(shared_system: DevProcess) -> None:
    system = shared_system
    jobs = await _upload(system.upload_url, 2)
    views = await _all_done(system.upload_url, jobs)
    _, provenance = stores(system)
    await provenance.connect(create=False)
    try:
        for job, view in zip(jobs, views, strict=True):
            kinds = sorted(d["kind"] for d in await provenance.find({"job_id": job}))
            assert kinds == ["job.received", "step.completed", "step.started"]
            [made] = await provenance.find({"output.sha256": view["outputs"][0]["sha256"],
                                            "kind": "step.completed"})
            assert made["job_id"] == job and made["input"]["sha256"] == view["input"]["sha256"]
        both = await provenance.find({"job_id": {"$in": jobs}, "kind": "job.received"})
        assert sorted(d["job_id"] for d in both) == sorted(jobs)
    finally:
        await provenance.close()


async def test_prov_record_lineage_and_verify(shared_system: DevProcess) -> None:
    url = shared_system.upload_url
    [job] = await _upload(url, 1, width=171)  # content no other test uploads
    [view] = await _all_done(url, [job])
    source, made = view["input"]["sha256"], view["outputs"][0]["sha256"]
    status, prov = await get_json(f"{url}/jobs/{job}/provenance")
    assert status == 200 and f"job:{job}" in str(prov.get("bundle"))
    status, found = await get_json(f"{url}/lineage/{made}")
    assert status == 200
    assert found["ancestors"] == [source] and found["jobs"] == [job]
    async with aiohttp.ClientSession() as session, session.post(
        f"{url}/jobs/{job}/verify"
    ) as resp:
        assert resp.status == 200, await resp.text()
        report = await resp.json()
    assert report["verified"] is True and report["outcome"] == "verified", report


async def test_jobs_accepted_before_a_restart_are_processed_after_it(
    dev: DevProcess, backend_env: dict[str, str]
) -> None:
    settings = settings_of(UploadSettings, backend_env).model_copy(
        update={"upload_port": dev.port, "upload_host": "127.0.0.1"}
    )
    stop = asyncio.Event()
    upload_only = asyncio.create_task(run_upload(settings, stop=stop))
    try:
        async def answering() -> bool:  # ready: its backends answer (healthz: alive)
            try:
                return (await get_json(f"{dev.upload_url}/readyz"))[0] == 200
            except aiohttp.ClientError:
                return False

        await wait_for(answering, timeout=30, interval=0.05)
        jobs = await _upload(dev.upload_url, 3)
        for job in jobs:
            status, view = await get_json(f"{dev.upload_url}/jobs/{job}")
            assert (status, view["status"]) == (200, "queued")
    finally:
        stop.set()
        await upload_only

    dev.start()
    await dev.wait_ready()
    views = await _all_done(dev.upload_url, jobs)
    assert all(len(v["outputs"]) == 1 for v in views)
    assert dev.stop() == 0


async def test_accepted_jobs_survive_a_killed_process(dev: DevProcess) -> None:
    if not dev.embedded:
        pytest.skip("the servers keep their own state; this is about the embedded backends")
    dev.start()
    await dev.wait_ready()
    jobs = await _upload(dev.upload_url, 6)
    dev.stop(sig=signal.SIGKILL)

    dev.start()
    await dev.wait_ready()
    views = await _all_done(dev.upload_url, jobs)
    assert sorted(v["job_id"] for v in views) == sorted(jobs)
    assert all(len(v["outputs"]) == 1 for v in views)


async def test_a_busy_port_is_named_and_the_data_dir_has_one_owner(system: DevProcess) -> None:
    other = DevProcess(system.env, system.data_dir.with_name("other"), system.logs,
                       embedded=system.embedded)
    other.starts = 100
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        other.port = busy.getsockname()[1]
        assert other.start().wait(60) == 2
    assert "choose another port with --port" in other.log()
    if system.embedded:
        other.data_dir = system.data_dir
        assert other.start().wait(60) == 2
        assert "in use by another process" in other.log()
    other.stop()


def test_unset_urls_select_the_embedded_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AMQP_URL", "AMQP_HOST", "S3_URL", "COUCHDB_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = DevSettings.build(data_dir=tmp_path / "d")
    assert embedded_path(settings.upload.broker_url()) == tmp_path / "d" / "broker"
    assert embedded_path(settings.runner.s3_url) == tmp_path / "d" / "objects"
    assert embedded_path(settings.provenance.couchdb_url) == tmp_path / "d" / "provenance"
    assert settings.upload.upload_port == 8000 and settings.upload.log_format == "text"

    monkeypatch.setenv("AMQP_HOST", "127.0.0.1")
    monkeypatch.setenv("S3_URL", "http://127.0.0.1:8333")
    settings = DevSettings.build(data_dir=tmp_path / "d", port=9000)
    assert settings.upload.broker_url().startswith("amqp://")
    assert settings.runner.s3_url == "http://127.0.0.1:8333"
    assert settings.provenance.couchdb_url.startswith("file://")
    assert settings.upload.upload_port == 9000
    lines = dict(settings.backend_lines())
    assert lines["broker"] == "amqp://127.0.0.1:5672 (RabbitMQ)"
    assert lines["objects"] == "http://127.0.0.1:8333 (S3)"
