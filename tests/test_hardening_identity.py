"""Issue 16, finding 5: tokens name principals, jobs record their owner, and with
UPLOAD_VISIBILITY=own a principal sees only its own jobs; the uploader's address
is recorded only when UPLOAD_RECORD_CLIENT_ADDRESS says so."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from imgpipe.storage.open import open_object_store
from tests.hardening import Service
from tests.images import image_bytes
from tests.prov_events import ref, step

TOKENS = "alice:tok-alice-0123456789,bob:tok-bob-0123456789,plain-token-0123456789"
ALICE = {"Authorization": "Bearer tok-alice-0123456789"}
BOB = {"Authorization": "Bearer tok-bob-0123456789"}


async def _upload(client: TestClient[Any, Any], headers: dict[str, str]) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(24, 24, ".png"), filename="secret.png")
    resp = await client.post("/upload", data=form, headers=headers)
    assert resp.status == 202, await resp.text()
    [job] = (await resp.json())["jobs"]
    return dict(job)


async def _reason(resp: aiohttp.ClientResponse) -> tuple[int, str | None]:
    body = await resp.json()
    return resp.status, (body.get("error") or {}).get("reason")


async def test_own_visibility_hides_other_principals_jobs(service: Service) -> None:
    client = await service.start(upload_api_tokens=TOKENS, upload_visibility="own")
    await service.record_uploads()
    job = await _upload(client, ALICE)
    job_id = job["job_id"]
    received = await service.received(job_id)
    assert received["owner"] == "alice"
    resp = await client.get(f"/jobs/{job_id}", headers=ALICE)
    assert resp.status == 200 and (await resp.json())["owner"] == "alice"
    assert (await client.get(f"/jobs/{job_id}/input", headers=ALICE)).status == 200

    original = ref("x").model_copy(update={"sha256": job["sha256"], "bucket": "in"})
    await service.record(step(job_id, "thumbnailed", "thumbnail", original, ref(f"{job_id}-t")))
    for method, path in [("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/input"),
                         ("GET", f"/jobs/{job_id}/outputs/0"),
                         ("GET", f"/jobs/{job_id}/provenance"),
                         ("POST", f"/jobs/{job_id}/verify")]:
        resp = await client.request(method, path, headers=BOB)
        assert await _reason(resp) == (404, "job_not_found"), path
    resp = await client.get("/jobs", params={"ids": job_id}, headers=BOB)
    assert (await resp.json()) == {"jobs": [], "missing": [job_id]}
    resp = await client.get(f"/lineage/{job['sha256']}", headers=BOB)
    assert await _reason(resp) == (404, "content_not_found")
    resp = await client.get(f"/lineage/{job['sha256']}", headers=ALICE)
    assert resp.status == 200 and job_id in (await resp.json())["jobs"]
    resp = await client.get(f"/jobs/{job_id}/provenance", headers=ALICE)
    assert resp.status == 200


async def test_all_visibility_is_todays_behaviour_and_plain_tokens_still_work(
    service: Service,
) -> None:
    client = await service.start(upload_api_tokens=TOKENS)
    await service.record_uploads()
    job = await _upload(client, {"Authorization": "Bearer plain-token-0123456789"})
    owner = (await service.received(job["job_id"]))["owner"]
    assert owner.startswith("token-") and "plain" not in owner
    resp = await client.get(f"/jobs/{job['job_id']}", headers=BOB)
    assert resp.status == 200
    assert (await client.get(f"/jobs/{job['job_id']}")).status == 401


async def test_client_address_is_recorded_only_when_asked(service: Service) -> None:
    client = await service.start()
    await service.record_uploads()
    job = await _upload(client, {})
    received = await service.received(job["job_id"])
    assert "client" not in received and "address" not in str(received["prov"])
    client = await service.start(upload_record_client_address=True)
    job = await _upload(client, {})
    assert (await service.received(job["job_id"]))["client"] == "127.0.0.1"


async def _events(client: TestClient[Any, Any], path: str, headers: dict[str, str]) -> str:
    """What the event stream sends from its start (position 0) in about a second."""
    text = ""
    async with client.get(path, headers={**headers, "Last-Event-ID": "0"}) as resp:
        assert resp.status == 200
        try:
            async with asyncio.timeout(1.5):
                async for line in resp.content:
                    text += line.decode()
        except TimeoutError:
            pass
    return text


async def test_own_visibility_filters_the_event_streams(service: Service) -> None:
    client = await service.start(upload_api_tokens=TOKENS, upload_visibility="own")
    await service.record_uploads()
    job_id = (await _upload(client, ALICE))["job_id"]
    await service.received(job_id)
    assert job_id in await _events(client, "/events", ALICE)
    assert job_id not in await _events(client, "/events", BOB)
    resp = await client.get(f"/jobs/{job_id}/events", headers=BOB)
    assert await _reason(resp) == (404, "job_not_found")


async def test_ingested_jobs_belong_to_the_principal_that_asked(service: Service) -> None:
    client = await service.start(upload_api_tokens=TOKENS, upload_visibility="own",
                                 upload_ingest_buckets="archive-bucket")
    await service.record_uploads()
    assert service.backends is not None
    archive = await open_object_store(service.settings, buckets=("archive-bucket",))
    try:
        await archive.put_bytes("archive-bucket", "plates/a.png", image_bytes(20, 20, ".png"),
                                content_type="image/png")
    finally:
        await archive.close()
    resp = await client.post("/ingest", json={"source": "s3://archive-bucket/plates/"},
                             headers=ALICE)
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert resp.status == 200 and lines[-1]["done"], lines
    [doc] = await service.backends.provenance.find({"kind": "job.received"})
    assert doc["owner"] == "alice"
    assert (await client.get(f"/jobs/{doc['job_id']}", headers=BOB)).status == 404
    assert (await client.get(f"/jobs/{doc['job_id']}", headers=ALICE)).status == 200
