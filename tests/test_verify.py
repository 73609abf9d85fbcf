"""Verification on the running system: re-run the record, compare hashes, catch tampering.

The scenarios that need no direct access to CouchDB run again on `imgpipe dev`
with both backend sets (tests/test_verify_dev.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import pytest
from prov.model import ProvDocument

from imgpipe.domain.events import new_id, provenance_event_id
from imgpipe.domain.pipeline import BUILTIN_PRESETS, parse_pipeline
from imgpipe.storage.protocol import ObjectNotFound
from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes
from tests.prov_system import (
    call,
    imgpipe,
    opened_objects,
    opened_provenance,
    submit,
    verify,
    wait_done,
)

IMAGES = {
    "photo.jpg": lambda: image_bytes(640, 480, ".jpg"),
    "graphic.png": lambda: image_bytes(301, 173, ".png"),
    "small.webp": lambda: image_bytes(48, 64, ".webp"),
    "scan.tiff": lambda: image_bytes(300, 420, ".tiff", compression="lzw"),
}


def reproduced(output: dict[str, Any]) -> str:
    """What a re-run must give: the libvips payload's hash (a signed output records it apart)."""
    found: str = output.get("recorded_payload_sha256", output["recorded_sha256"])
    return found


def location(ref: str) -> tuple[str, str]:
    bucket, key = ref.removeprefix("s3://").split("/", 1)
    return bucket, key


@pytest.mark.parametrize("name", sorted(IMAGES))
async def test_every_preset_verifies(shared_system: ServiceProcesses, name: str) -> None:
    presets = sorted(BUILTIN_PRESETS)
    job_id = await submit(shared_system, IMAGES[name](), *presets, name=name)
    view = await wait_done(shared_system, job_id, outputs=len(presets))
    report = await verify(shared_system, job_id)
    assert report["outcome"] == "verified", report
    assert report["verified"] is True
    steps = {step["pipeline"]: step for step in report["steps"]}
    assert set(steps) == {parse_pipeline(p).canonical() for p in presets}
    for step in steps.values():
        assert step["outcome"] == "verified"
        assert step["output"]["rerun_sha256"] == reproduced(step["output"])
        assert step["libvips"]["recorded"] == step["libvips"]["current"]
    assert {o["sha256"] for o in view["outputs"]} == {
        s["output"]["recorded_sha256"] for s in steps.values()}


async def tamper(system: ServiceProcesses, ref: str, data: bytes | None) -> bytes | None:
    """Replace (or with None, delete) a stored object; its bytes before, if any."""
    bucket, key = location(ref)
    async with opened_objects(system) as store:
        try:
            before: bytes | None = await store.get_bytes(bucket, key)
        except ObjectNotFound:
            before = None
        if data is None:
            await store.delete(bucket, key)
        else:
            await store.put_bytes(bucket, key, data, content_type="image/png")
        return before


async def test_tampering_with_stored_objects_is_detected(shared_system: ServiceProcesses) -> None:
    system = shared_system
    job_id = await submit(system, image_bytes(400, 300, ".png"), "thumbnail")
    view = await wait_done(system, job_id)
    output, source = view["outputs"][0]["location"], view["input"]["location"]
    assert (await verify(system, job_id))["outcome"] == "verified"

    original_output = await tamper(system, output, image_bytes(400, 300, ".png"))
    assert original_output is not None
    report = await verify(system, job_id)
    assert report["outcome"] == "output_changed" and not report["verified"]
    [step] = report["steps"]
    assert step["output"]["rerun_sha256"] == reproduced(step["output"])
    assert step["output"]["stored_sha256"] != step["output"]["recorded_sha256"]

    await tamper(system, output, None)
    [step] = (await verify(system, job_id))["steps"]
    assert step["outcome"] == "output_changed" and step["output"]["stored_sha256"] is None

    await tamper(system, output, original_output)
    assert (await verify(system, job_id))["outcome"] == "verified"

    original_input = await tamper(system, source, image_bytes(400, 301, ".png"))
    assert original_input is not None
    report = await verify(system, job_id)
    assert report["outcome"] == "input_changed"
    assert report["steps"][0]["input"]["stored_sha256"] != report["steps"][0]["input"]["recorded_sha256"]
    await tamper(system, source, None)
    assert (await verify(system, job_id))["outcome"] == "input_changed"
    await tamper(system, source, original_input)
    assert (await verify(system, job_id))["outcome"] == "verified"


async def edit_record(system: ServiceProcesses, couchdb: Any, doc_id: str, change: Any) -> None:
    """Change a stored provenance document in place (as someone with database access could)."""
    url = f"{couchdb.url}/{system.env['COUCHDB_DB']}/{doc_id}"
    async with aiohttp.ClientSession(headers=couchdb.auth_headers()) as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            doc = await resp.json()
        change(doc)
        async with http.put(url, data=json.dumps(doc)) as resp:
            assert resp.status in (200, 201), await resp.text()


async def test_a_record_that_does_not_match_its_output_differs(
    shared_system: ServiceProcesses, couchdb_server: Any
) -> None:
    system = shared_system
    job_id = await submit(system, image_bytes(320, 200, ".jpg"), "dither")
    view = await wait_done(system, job_id)
    pipeline = view["outputs"][0]["pipeline"]
    doc_id = provenance_event_id(job_id, view["outputs"][0]["stage"], "step.completed", pipeline,
                                 view["input"]["sha256"])

    def other_output(doc: dict[str, Any]) -> None:
        doc["output"]["sha256"] = hashlib.sha256(b"something else").hexdigest()

    await edit_record(system, couchdb_server, doc_id, other_output)
    report = await verify(system, job_id)
    assert report["outcome"] == "output_differs"
    [step] = report["steps"]
    assert step["libvips"]["recorded"] == step["libvips"]["current"]
    assert "same libvips" in step["message"]

    def older_engine(doc: dict[str, Any]) -> None:
        for agent in doc["agents"]:
            if agent["name"] == "libvips":
                agent["version"] = "8.0.0"

    await edit_record(system, couchdb_server, doc_id, older_engine)
    [step] = (await verify(system, job_id))["steps"]
    assert step["outcome"] == "output_differs"
    assert step["libvips"]["recorded"] == "8.0.0" != step["libvips"]["current"]
    assert "libvips changed from 8.0.0" in step["message"]


async def test_incomplete_and_unknown_records(shared_system: ServiceProcesses) -> None:
    system = shared_system
    status, body = await call(system, "POST", f"/jobs/{new_id()}/verify")
    assert status == 404 and body["error"]["reason"] == "job_not_found"
    job_id = new_id()
    async with opened_provenance(system) as store:
        await store.put(provenance_event_id(job_id, "processed", "step.started", "format:png"), {
            "kind": "step.started", "job_id": job_id, "stage": "processed",
            "pipeline": "format:png", "time": "2026-01-01T00:00:00+00:00"})
    report = await verify(system, job_id)
    assert report["outcome"] == "record_incomplete"
    assert "no completion" in report["steps"][0]["message"]


async def test_commands_show_and_verify(shared_system: ServiceProcesses) -> None:
    system = shared_system
    job_id = await submit(system, image_bytes(200, 150, ".png"), "thumbnail", name="cat.png")
    view = await wait_done(system, job_id)

    status, out, err = await imgpipe(system, "verify", job_id)
    assert status == 0, err
    assert f"job {job_id}: verified" in out
    status, out, _ = await imgpipe(system, "verify", "--json", job_id)
    assert status == 0 and json.loads(out)["outcome"] == "verified"
    status, out, err = await imgpipe(system, "verify", "--url", system.upload_url, job_id)
    assert status == 0, err
    assert f"job {job_id}: verified" in out

    status, out, _ = await imgpipe(system, "provenance", "show", job_id)
    assert status == 0
    assert "uploaded cat.png" in out and view["outputs"][0]["sha256"][:12] in out
    status, out, _ = await imgpipe(system, "provenance", "show", "--format", "provn", job_id)
    assert status == 0
    document = ProvDocument.deserialize(content=out, format="provn", profile="strict")
    assert [b.identifier.localpart for b in document.bundles] == [job_id]
    status, out, _ = await imgpipe(system, "provenance", "lineage", view["input"]["sha256"])
    assert status == 0 and "descendant" in out

    await tamper(system, view["outputs"][0]["location"], b"not the output")
    status, out, _ = await imgpipe(system, "verify", job_id)
    assert status == 1 and "NOT verified: output_changed" in out
    status, _, err = await imgpipe(system, "verify", new_id())
    assert status == 3 and "no provenance" in err
    status, _, err = await imgpipe(system, "verify", "--url", system.upload_url, new_id())
    assert status == 3 and "no job" in err
    system.env["IMAGEPROC_URL"], imageproc = "http://127.0.0.1:9", system.env["IMAGEPROC_URL"]
    try:
        status, _, err = await imgpipe(system, "verify", job_id)
    finally:
        system.env["IMAGEPROC_URL"] = imageproc
    assert status == 3 and "no verdict" in err
