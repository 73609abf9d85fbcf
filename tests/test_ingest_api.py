"""``imgpipe ingest`` and ``POST /ingest`` on the running services (SeaweedFS, RabbitMQ, CouchDB).

Images put straight into a bucket of their own become jobs that the runner
processes from where they are; the provenance names that location; a second
run skips them all; buckets the deployment does not allow are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any

import aiohttp
import pytest

from imgpipe.ingest.run import ingest_job_id
from imgpipe.runtime.config import S3Settings
from imgpipe.storage.open import open_object_store
from imgpipe.testing.processes import ServiceProcesses
from tests.backend_sets import settings_of
from tests.system import wait_for
from tests.test_ingest import png

COUNT = 40
PIPELINE = "resize:w=2/format:png"


async def _imgpipe(system: ServiceProcesses, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imgpipe.cli", *args, "--url", system.upload_url,
        env=os.environ | {"COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _post(system: ServiceProcesses, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{system.upload_url}/ingest", json=body
    ) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, [line for line in (await resp.text()).splitlines() if line]


async def test_ingest_makes_jobs_of_objects_where_they_are(system_env: ServiceProcesses) -> None:
    system = system_env
    archive = f"{system.name}-archive"
    store = await open_object_store(settings_of(S3Settings, system.env), buckets=(archive,))
    try:
        for n in range(COUNT):
            await store.put_bytes(archive, f"survey/plate-{n:03d}.png", png(n),
                                  content_type="image/png")
        await store.put_bytes(archive, "survey/README.txt", b"plates 0-39", content_type="text/plain")
    finally:
        await store.close()
    for service in ("imageproc", "provenance", "runner"):
        system.start(service)
    system.start("upload-server", UPLOAD_INGEST_BUCKETS=f"{archive},{system.name}-other")
    await asyncio.gather(*(system.wait_ready(k) for k in
                           ("imageproc", "provenance", "runner", "upload-server")))

    status, out, err = await _imgpipe(system, "ingest", f"s3://{archive}/survey/",
                                      "--pipeline", PIPELINE)
    assert status == 0, out + err
    assert "listed" in out and str(COUNT) in out

    job_id = ingest_job_id(archive, "survey/plate-007.png", hashlib.sha256(png(7)).hexdigest(),
                           (PIPELINE,))

    async def done() -> Any:
        async with aiohttp.ClientSession() as session, session.get(
            f"{system.upload_url}/jobs/{job_id}"
        ) as resp:
            view = await resp.json() if resp.status == 200 else {}
            return view if view.get("status") == "done" else None

    view = await wait_for(done, timeout=90)
    assert view["input"]["location"] == f"s3://{archive}/survey/plate-007.png"
    assert view["filename"] == "plate-007.png"
    assert view["outputs"][0]["pipeline"] == PIPELINE
    async with aiohttp.ClientSession() as session, session.get(
        f"{system.upload_url}/jobs/{job_id}/provenance", params={"format": "provn"}
    ) as resp:
        assert f"s3://{archive}/survey/plate-007.png" in await resp.text()

    status, lines = await _post(system, {"source": f"s3://{archive}/survey/",
                                         "pipelines": [PIPELINE]})
    assert status == 200
    last = json.loads(lines[-1])
    assert last["done"] and (last["queued"], last["skipped"], last["bytes_read"]) == (
        0, COUNT + 1, 0)

    refusals = [
        ({"source": "s3://not-allowed/x"}, 403, "ingest_bucket_not_allowed"),
        ({"source": f"s3://{system.name}-other/x"}, 404, "bucket_not_found"),
        ({"source": "https://example.org/x"}, 400, "invalid_source"),
        ({"source": f"s3://{archive}/", "pipelines": ["zoom:3"]}, 400, "invalid_pipeline"),
        ({"pipelines": ["thumbnail"]}, 400, "invalid_json"),
    ]
    for body, code, reason in refusals:
        status, answer = await _post(system, body)
        assert (status, answer["error"]["reason"]) == (code, reason), (body, answer)
    status, out, err = await _imgpipe(system, "ingest", "s3://not-allowed/x")
    assert status == 2 and "ingest_bucket_not_allowed" in out


@pytest.mark.parametrize("value", ["", "archive"])
def test_ingest_is_off_unless_buckets_are_allowed(value: str) -> None:
    from imgpipe.upload.settings import UploadSettings

    settings = UploadSettings(upload_ingest_buckets=value)
    assert settings.ingest_buckets() == ((value,) if value else ())
