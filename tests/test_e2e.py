"""The seed's flow end to end: upload over HTTP → RabbitMQ → runner → imageproc → S3,
provenance → CouchDB, with the four services as real processes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import pytest
import pyvips

from imgpipe.client.api import Client
from imgpipe.provstore.open import new_provenance_store
from imgpipe.runtime.config import load
from imgpipe.storage.open import new_object_store
from imgpipe.testing.processes import ServiceProcesses
from imgpipe.upload.settings import UploadSettings
from tests.images import image_bytes
from tests.system import wait_for


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.json()


def stores(system: ServiceProcesses) -> tuple[Any, Any]:
    """Clients (not yet connected) of the system's object store and provenance database,
    whichever backends its settings select."""
    settings = load(UploadSettings, **{k.lower(): v for k, v in system.env.items()})
    return new_object_store(settings), new_provenance_store(settings)


async def test_upload_is_processed_with_provenance(shared_system: ServiceProcesses) -> None:
    system = shared_system
    original = image_bytes(1200, 800, ".jpg")
    async with Client(system.upload_url) as client:
        job = await client.upload(original, filename="holiday photo.jpg",
                                  pipeline="resize:w=300/format:png")
        assert job["sha256"] == hashlib.sha256(original).hexdigest()
        # visible at once, never a 404 while the record is on its way
        assert (await client.job(job["job_id"]))["status"] in ("queued", "processing", "done")

    async def done() -> Any:
        status, view = await get_json(f"{system.upload_url}/jobs/{job['job_id']}")
        assert status == 200
        assert view["status"] != "failed", view
        return view if view["status"] == "done" else None

    view = await wait_for(done, timeout=60)
    [output] = view["outputs"]
    assert output["format"] == "png" and (output["width"], output["height"]) == (300, 200)

    s3, couch = stores(system)
    await s3.connect()
    try:
        bucket, key = output["location"].removeprefix("s3://").split("/", 1)
        assert bucket == system.env["S3_OUTPUT_BUCKET"]
        data = await s3.get_bytes(bucket, key)
    finally:
        await s3.close()
    decoded = pyvips.Image.new_from_buffer(data, "")
    assert (decoded.width, decoded.height) == (300, 200)
    assert hashlib.sha256(data).hexdigest() == output["sha256"]

    await couch.connect(create=False)
    try:
        docs = await couch.find({"job_id": job["job_id"], "kind": "step.completed"})
    finally:
        await couch.close()
    [record] = docs
    assert record["input"]["sha256"] == job["sha256"]
    assert record["output"]["sha256"] == output["sha256"]
    assert record["pipeline"] == view["pipelines"][0]
    assert "resize" in record["pipeline"] and "png" in record["pipeline"]
    if isinstance(system, ServiceProcesses):  # (tests/test_dev.py runs this on `imgpipe dev`)
        # S3 presigns: imageproc read the input and wrote the output itself (the object path)
        lines = [json.loads(line) for line in system.log("runner").splitlines()
                 if line.startswith("{") and job["job_id"] in line]
        assert [line.get("path") for line in lines if line.get("message") == "image processed"
                ] == ["object"], lines

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{system.upload_url}{output['url']}") as resp:
            assert resp.status == 200
            assert await resp.read() == data


async def test_several_files_give_one_job_each(shared_system: ServiceProcesses) -> None:
    system = shared_system
    files = [(f"img{i}.png", image_bytes(200 + i * 10, 100, ".png")) for i in range(3)]
    async with Client(system.upload_url) as client:
        jobs = await client.upload_files(files, pipelines=["resize:w=50"])
    assert len({j["job_id"] for j in jobs}) == 3

    async def all_done() -> bool:
        views = [await get_json(f"{system.upload_url}/jobs/{j['job_id']}") for j in jobs]
        return all(v["status"] == "done" for _, v in views)

    await wait_for(all_done, timeout=60)


@pytest.mark.parametrize(
    ("files", "fields", "status", "reason"),
    [
        ([], {"pipeline": "resize:w=10"}, 400, "missing_file"),
        ([("notes.txt", b"just some text, not an image at all")], {}, 415, "unsupported_format"),
        ([("empty.png", b"")], {}, 400, "empty_file"),
        ([("ok.png", None)], {"colour": "blue"}, 400, "unknown_field"),
        ([("ok.png", None)], {"pipeline": "frobnicate:x=1"}, 400, "invalid_pipeline"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_stored(
    shared_system: ServiceProcesses, files: list[tuple[str, bytes | None]], fields: dict[str, str],
    status: int, reason: str,
) -> None:
    system = shared_system
    s3, _ = stores(system)
    await s3.connect()
    try:
        before = await s3.list_keys(system.env["S3_INPUT_BUCKET"])
    finally:
        await s3.close()
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("file", data if data is not None else image_bytes(64, 64, ".png"),
                       filename=name)
    for key, value in fields.items():
        form.add_field(key, value)
    if not files and not fields:
        form.add_field("nothing", "")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{system.upload_url}/upload", data=form) as resp:
            assert resp.status == status, await resp.text()
            body = await resp.json()
    assert body["error"]["reason"] == reason
    assert body["error"]["message"]
    await s3.connect()
    try:
        assert await s3.list_keys(system.env["S3_INPUT_BUCKET"]) == before
    finally:
        await s3.close()


async def test_unknown_job_is_404(shared_system: ServiceProcesses) -> None:
    system = shared_system
    status, body = await get_json(f"{system.upload_url}/jobs/{'0' * 32}")
    assert status == 404 and body["error"]["reason"] == "job_not_found"
    status, body = await get_json(f"{system.upload_url}/jobs/../../etc")
    assert status == 404


async def test_services_are_observable_and_stop_cleanly(system: ServiceProcesses) -> None:
    for key in ("upload-server", "imageproc", "runner", "provenance"):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{system.url(key)}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"{system.url(key)}/metrics") as resp:
                assert resp.status == 200
                assert "imgpipe_" in await resp.text()
    for key in ("runner", "upload-server", "provenance", "imageproc"):
        assert system.stop(key) == 0, system.log(key)
