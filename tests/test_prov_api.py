"""Provenance records and the upload service's provenance routes.

The recorder stores made-up events in a real CouchDB API server (and in the
embedded SQLite store: every test runs on both backend sets); the routes run
in-process against that database and the object store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prov.model import ProvDocument

from imgpipe.broker.open import new_broker
from imgpipe.broker.protocol import Delivery
from imgpipe.domain.events import ProvenanceEvent, new_id
from imgpipe.domain.lineage import lineage
from imgpipe.provenance.recorder import Recorder
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.storage.protocol import ObjectStore
from imgpipe.upload.app import create_app
from imgpipe.upload.context import Backends
from imgpipe.upload.intake import input_key
from imgpipe.upload.settings import UploadSettings
from tests.backend_sets import settings_of
from tests.prov_events import chain, received, ref, sha, step


@dataclass
class Api:
    url: str
    couch: ProvenanceStore
    s3: ObjectStore
    settings: UploadSettings

    async def record(self, events: list[ProvenanceEvent]) -> list[bool]:
        recorder = Recorder(self.couch)
        stored = []
        for ev in events:
            before = await self.couch.get(ev.event_id)
            await recorder.handle(Delivery(body=ev.to_bytes(), message_id=ev.event_id,
                                           redelivered=False))
            stored.append(before is None)
        return stored

    async def get(self, path: str, **params: str) -> tuple[int, str, str]:
        async with aiohttp.ClientSession() as session, session.get(
            self.url + path, params=params
        ) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


@pytest.fixture
async def api(
    backend_env: dict[str, str], provenance_store: ProvenanceStore, object_store: ObjectStore
) -> AsyncIterator[Api]:
    """The provenance routes over a fresh database of each backend set (CouchDB, SQLite)."""
    settings = settings_of(UploadSettings, backend_env | {"IMAGEPROC_URL": "http://127.0.0.1:9"})
    broker = new_broker(settings, name="test")  # never connected: these routes do not publish
    app = create_app(settings, Backends(broker=broker, store=object_store,
                                        provenance=provenance_store))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Api(str(server.make_url("")).rstrip("/"), provenance_store, object_store, settings)
    finally:
        await server.close()
        await broker.close()


async def test_each_event_is_stored_once_with_its_prov(api: Api) -> None:
    _job_id, events = chain()
    assert await api.record(events) == [True] * len(events)
    assert await api.record(events) == [False] * len(events)
    doc = await api.couch.get(events[0].event_id)
    assert doc is not None and doc["schema_version"] == 2 and "entity" in doc["prov"]


async def test_job_provenance_as_prov_json_and_prov_n(api: Api) -> None:
    job_id, events = chain()
    await api.record(events)
    status, ctype, body = await api.get(f"/jobs/{job_id}/provenance")
    assert status == 200 and ctype.startswith("application/json")
    document = ProvDocument.deserialize(content=body)
    [bundle] = document.bundles
    assert bundle.identifier.localpart == job_id
    assert len([r for r in bundle.get_records() if r.get_type().localpart == "Derivation"]) == 2
    status, ctype, text = await api.get(f"/jobs/{job_id}/provenance", format="provn")
    assert status == 200 and ctype.startswith("text/provenance-notation")
    assert f"bundle job:{job_id}" in text
    assert ProvDocument.deserialize(content=text, format="provn", profile="strict") == document


async def test_job_provenance_refusals(api: Api) -> None:
    status, _, body = await api.get(f"/jobs/{new_id()}/provenance")
    assert status == 404 and json.loads(body)["error"]["reason"] == "job_not_found"
    status, _, body = await api.get("/jobs/not-a-job/provenance")
    assert status == 404 and json.loads(body)["error"]["reason"] == "job_not_found"
    queued = new_id()
    await api.s3.put_bytes(api.settings.s3_input_bucket, input_key(queued), b"x",
                           content_type="image/png")
    status, _, body = await api.get(f"/jobs/{queued}/provenance")
    assert status == 404 and json.loads(body)["error"]["reason"] == "provenance_pending"
    job_id, events = chain()
    await api.record(events)
    status, _, body = await api.get(f"/jobs/{job_id}/provenance", format="turtle")
    assert status == 400 and json.loads(body)["error"]["reason"] == "invalid_format"


async def test_lineage_spans_stages_in_one_query(api: Api) -> None:
    job_id, events = chain()
    await api.record(events)
    original, thumb, dithered = (sha(f"{job_id}-{n}") for n in ("original", "thumb", "dithered"))
    status, _, body = await api.get(f"/lineage/{thumb}")
    assert status == 200
    found = json.loads(body)
    assert (found["ancestors"], found["descendants"]) == ([original], [dithered])
    assert {e["sha256"]: e["relation"] for e in found["entities"]} == {
        thumb: "self", original: "ancestor", dithered: "descendant"}
    assert [(s["stage"], s["outcome"]) for s in found["steps"]] == [
        ("thumbnailed", "completed"), ("dithered", "completed")]
    assert [u["job_id"] for u in found["uploads"]] == [job_id]
    status, _, body = await api.get(f"/lineage/{dithered}")
    assert json.loads(body)["ancestors"] == [thumb, original]
    status, _, body = await api.get(f"/lineage/{original}")
    assert json.loads(body)["descendants"] == [thumb, dithered]


async def test_lineage_joins_jobs_that_share_content(api: Api) -> None:
    shared = ref("shared-original", bucket="in")
    first, second = new_id(), new_id()
    a, b = ref(f"{first}-small"), ref(f"{second}-web")
    await api.record([received(first, shared), *step(first, "processed", "resize:w=64/format:png", shared, a),
                      received(second, shared), *step(second, "processed", "format:webp", shared, b),
                      *step(second, "broken", "blur:3/format:png", shared, None, failed=True)])
    found = await lineage(api.couch, shared.sha256)
    summary = found.to_dict()
    assert set(summary["descendants"]) == {a.sha256, b.sha256}
    assert summary["jobs"] == sorted([first, second])
    assert {(s["stage"], s["outcome"]) for s in summary["steps"]} == {
        ("processed", "completed"), ("broken", "failed")}
    status, ctype, text = await api.get(f"/lineage/{shared.sha256}", format="provn")
    assert status == 200 and ctype.startswith("text/provenance-notation")
    document = ProvDocument.deserialize(content=text, format="provn", profile="strict")
    assert {bundle.identifier.localpart for bundle in document.bundles} == {first, second}


async def test_lineage_refusals(api: Api) -> None:
    status, _, body = await api.get(f"/lineage/{sha('never stored')}")
    assert status == 404 and json.loads(body)["error"]["reason"] == "content_not_found"
    status, _, body = await api.get("/lineage/abc")
    assert status == 400 and json.loads(body)["error"]["reason"] == "invalid_sha256"


async def test_verify_without_imageproc_gives_no_verdict(api: Api) -> None:
    data = b"\x89PNG stored input"
    stored = await api.s3.put_bytes(api.settings.s3_input_bucket, "uploads/x", data,
                                    content_type="image/png")
    source = ref("x", bucket=stored.bucket).model_copy(
        update={"key": stored.key, "sha256": stored.sha256, "size": stored.size})
    job_id = new_id()
    await api.record([received(job_id, source),
                      *step(job_id, "processed", "format:png", source, ref(f"{job_id}-out"))])
    async with aiohttp.ClientSession() as session, session.post(
        f"{api.url}/jobs/{job_id}/verify"
    ) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["reason"] == "imageproc_unavailable"
