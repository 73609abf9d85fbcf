"""Issue 16, findings 2 and 4: verification and PROV export are bounded in cost
(rate per principal, recent verdicts answered again, heavy requests at once) and
never stall the event loop: /healthz answers while the heaviest export runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.domain.events import new_id
from imgpipe.imageproc import create_app as imageproc_app
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.upload.context import CONTEXT
from imgpipe.upload.intake import input_key
from tests.hardening import Service, healthz_latencies
from tests.images import image_bytes
from tests.prov_events import received, ref, step

#: The slowest /healthz answer allowed while a heavy request runs. Serialising this
#: job on the event loop stalled it for seconds (see docs/benchmarks.md); off the loop
#: the answers take milliseconds, and the bound leaves room for a loaded 2-core machine.
HEALTHZ_BOUND = 1.0


async def _big_job(service: Service, pipelines: int) -> tuple[str, str]:
    job_id = new_id()
    original = ref(f"{job_id}-original", bucket="in")
    names = tuple(f"resize:w={i + 1}/format:png" for i in range(pipelines))
    events = [received(job_id, original, names)]
    for i, pipeline in enumerate(names):
        events += step(job_id, "thumbnailed", pipeline, original, ref(f"{job_id}-{i}"), at=i)
    await service.record(events)
    return job_id, original.sha256


async def test_prov_export_leaves_the_event_loop_free(service: Service) -> None:
    client = await service.start()
    job_id, sha = await _big_job(service, 150)
    for path in (f"/jobs/{job_id}/provenance?format=jsonld",
                 f"/jobs/{job_id}/provenance?format=provn",
                 f"/lineage/{sha}?format=jsonld", f"/lineage/{sha}"):
        heavy = asyncio.create_task(client.get(path))
        latencies = await healthz_latencies(client, heavy)
        resp = await heavy
        assert resp.status == 200, path
        assert len(await resp.read()) > 100_000, path
        assert max(latencies) < HEALTHZ_BOUND, (path, latencies)


async def test_heavy_requests_beyond_the_limit_get_429(service: Service) -> None:
    client = await service.start(upload_heavy_concurrency=1)
    job_id, _ = await _big_job(service, 150)
    ctx = client.app[CONTEXT]  # type: ignore[index]
    first = asyncio.create_task(client.get(f"/jobs/{job_id}/provenance?format=provn"))
    while ctx.heavy.busy == 0:
        await asyncio.sleep(0.005)
    resp = await client.get(f"/jobs/{job_id}/provenance?format=jsonld")
    body = await resp.json()
    assert resp.status == 429 and body["error"]["reason"] == "busy"
    assert resp.headers["Retry-After"] == "1"
    assert (await first).status == 200
    assert (await client.get(f"/jobs/{job_id}/provenance?format=jsonld")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'imgpipe_upload_limited_total{limit="heavy_concurrency"}' in metrics


@pytest.fixture
async def imageproc() -> AsyncIterator[str]:
    server = TestServer(imageproc_app(ImageprocSettings(imageproc_workers=1)), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def _verifiable_job(service: Service, client: TestClient[Any, Any], width: int,
                          headers: dict[str, str] | None = None) -> str:
    """An uploaded image with a recorded step over it (its recorded output is made up)."""
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(width, 20, ".png"), filename="a.png")
    resp = await client.post("/upload", data=form, headers=headers)
    [job] = (await resp.json())["jobs"]
    source = ref("x").model_copy(update={"sha256": job["sha256"], "size": job["size"],
                                         "bucket": service.settings.s3_input_bucket,
                                         "key": input_key(job["job_id"])})
    await service.record([received(job["job_id"], source),
                          *step(job["job_id"], "thumbnailed", "resize:w=8/format:png", source,
                                ref(f"{job['job_id']}-out"))])
    return str(job["job_id"])


async def _verify(client: TestClient[Any, Any], job_id: str,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    resp = await client.post(f"/jobs/{job_id}/verify", headers=headers)
    return resp.status, await resp.json(), resp.headers.get("Retry-After", "")


async def test_verify_rate_per_principal_and_recent_reruns(service: Service, imageproc: str) -> None:
    tokens = "alice:tok-a-0123456789,bob:tok-b-0123456789"
    client = await service.start(upload_verify_per_minute=1, imageproc_url=imageproc,
                                 upload_api_tokens=tokens)
    alice = {"Authorization": "Bearer tok-a-0123456789"}
    bob = {"Authorization": "Bearer tok-b-0123456789"}
    first = await _verifiable_job(service, client, 30, alice)
    second = await _verifiable_job(service, client, 31, alice)
    status, report, _ = await _verify(client, first, alice)
    assert status == 200 and report["outcome"] == "output_differs", report
    rerun = report["steps"][0]["output"]["rerun_sha256"]
    # the same job again: its re-run is answered from memory, no rate spent
    status, again, _ = await _verify(client, first, alice)
    assert status == 200 and again["steps"][0]["output"]["rerun_sha256"] == rerun
    # another image: a re-run, past alice's rate of one a minute
    status, body, retry_after = await _verify(client, second, alice)
    assert status == 429 and body["error"]["reason"] == "rate_limited"
    assert 1 <= int(retry_after) <= 60
    # bob has a rate of his own
    status, _, _ = await _verify(client, second, bob)
    assert status == 200
    assert (await client.get("/healthz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'imgpipe_upload_limited_total{limit="verify_rate"}' in metrics
    assert "imgpipe_upload_verify_reruns_cached_total" in metrics
