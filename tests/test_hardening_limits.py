"""Issue 16, the cost limits: each request the adversarial review sent, scaled down,
gets a fast refusal with a reason, or a bounded answer (findings 1, 3, 6, 7, 10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from imgpipe.broker.policy import Action, RetryPolicy, decide
from imgpipe.client.imageproc import ImageprocClient
from imgpipe.domain.events import MAX_PIPELINES, ImageEvent, ObjectRef, new_id
from imgpipe.errors import PermanentError
from imgpipe.imageproc import create_app as imageproc_app
from imgpipe.imageproc.settings import ImageprocSettings
from tests.hardening import Service
from tests.images import image_bytes
from tests.prov_events import received, ref, step


def _form(pipelines: int) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(32, 32, ".png"), filename="a.png")
    for i in range(pipelines):
        form.add_field("pipeline", f"resize:w={i + 1}/format:png")
    return form


async def test_pipelines_per_upload_are_limited(service: Service) -> None:
    client = await service.start(upload_max_pipelines=4)
    resp = await client.post("/upload", data=_form(1000))
    body = await resp.json()
    assert resp.status == 413 and body["error"]["reason"] == "too_many_pipelines"
    assert "4" in body["error"]["message"]
    assert await service.backends.store.list_keys(service.settings.s3_input_bucket) == []  # type: ignore[union-attr]
    resp = await client.post("/upload", params=[("pipeline", "thumbnail")] * 5, data=_form(0))
    assert resp.status == 413
    # at the limit: accepted, duplicates folded in the order first asked
    form = _form(3)
    form.add_field("pipeline", "resize:w=1/format:png")
    resp = await client.post("/upload", data=form)
    assert resp.status == 202
    [job] = (await resp.json())["jobs"]
    assert job["pipelines"] == [f"resize:w={i}/format:png" for i in (1, 2, 3)]


def test_an_image_event_carries_a_bounded_number_of_pipelines() -> None:
    image = ObjectRef(bucket="b", key="k", sha256="0" * 64, size=1, media_type="image/png")
    with pytest.raises(ValidationError):
        ImageEvent(kind="uploaded", job_id=new_id(), stage="upload", image=image,
                   pipelines=tuple(f"p{i}" for i in range(MAX_PIPELINES + 1)))


async def test_deeply_nested_json_is_a_400_with_a_reason(service: Service) -> None:
    client = await service.start()
    deep = '{"pipeline":' * 5000 + '"thumbnail"' + "}" * 5000
    resp = await client.post("/pipelines/validate", data=deep,
                             headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["reason"] == "json_too_deep", body
    wrapped: object = "thumbnail"
    for _ in range(500):  # parses as JSON, nested past what a pipeline may be
        wrapped = {"pipeline": wrapped}
    resp = await client.post("/pipelines/validate", json=wrapped)
    body = await resp.json()
    assert resp.status == 400 and body["error"]["reason"] == "invalid_pipeline"
    assert "nested too deeply" in body["error"]["message"]
    resp = await client.post("/pipelines/validate", json={"pipeline": [[[["resize:w=2"]]]] * 2})
    assert resp.status == 400


async def test_job_status_reads_every_record(service: Service) -> None:
    """300 pipelines: more records than one query returns (the store's first page is 500)."""
    client = await service.start()
    job_id = new_id()
    original = ref(f"{job_id}-original", bucket="in")
    pipelines = tuple(f"resize:w={i + 1}/format:png" for i in range(300))
    events = [received(job_id, original, pipelines)]
    for i, pipeline in enumerate(pipelines):
        events += step(job_id, "thumbnailed", pipeline, original, ref(f"{job_id}-{i}"), at=i)
    await service.record(events)
    resp = await client.get(f"/jobs/{job_id}")
    view = await resp.json()
    assert resp.status == 200 and len(view["outputs"]) == 300 and view["status"] == "done"
    await service.record(events[:1] + step(job_id, "other", "x", original, None, failed=True))
    assert (await (await client.get(f"/jobs/{job_id}")).json())["status"] == "failed"


@pytest.mark.parametrize("index", ["-1", "+0", "0_0", "\uff10", "00000000000000000001", "1", " 0"])
async def test_output_index_is_plain_ascii_digits(service: Service, index: str) -> None:
    client = await service.start()
    job_id = new_id()
    original = ref(f"{job_id}-original", bucket="in")
    await service.record([received(job_id, original),
                          *step(job_id, "thumbnailed", "thumbnail", original, ref(f"{job_id}-t"))])
    resp = await client.get(f"/jobs/{job_id}/outputs/{index}")
    body = await resp.json()
    assert resp.status == 404 and body["error"]["reason"] == "output_not_found", (index, body)
    # the well-formed index reaches the store (the made-up output is not stored: 410)
    assert (await client.get(f"/jobs/{job_id}/outputs/0")).status == 410


async def test_served_pages_and_objects_carry_their_headers(service: Service) -> None:
    client = await service.start()
    for path in ("/", "/static/index.html", "/static/app.js", "/api"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert "default-src" in resp.headers["Content-Security-Policy"], path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
    resp = await client.post("/upload", data=_form(1))
    [job] = (await resp.json())["jobs"]
    resp = await client.get(f"/jobs/{job['job_id']}/input")
    assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_imageproc_deadline_is_not_retried() -> None:
    """imageproc's own time limit ran out: a permanent failure, dead-lettered at once."""
    from aiohttp.test_utils import TestServer

    server = TestServer(imageproc_app(ImageprocSettings(imageproc_workers=1, imageproc_deadline=0.5)))
    await server.start_server()
    client = ImageprocClient(str(server.make_url("")), timeout=30)
    try:
        with pytest.raises(PermanentError) as caught:
            await client.process(image_bytes(1500, 1500, ".png"),
                                 "blur:100/blur:100/blur:100/blur:100/format:png")
    finally:
        await client.close()
        await server.close()
    assert caught.value.reason == "imageproc_deadline"
    decision = decide(caught.value, attempt=1, policy=RetryPolicy())
    assert decision.action is Action.DEAD_LETTER


async def test_answers_name_no_data_directory(service: Service, tmp_path: Path) -> None:
    """Embedded backends whose directory broke: /readyz and the upload's 503 say what, not where."""
    client = await service.start()
    objects = tmp_path / "objects"
    shutil.rmtree(objects)
    objects.write_text("not a directory any more")
    resp = await client.get("/readyz")
    text = await resp.text()
    assert resp.status == 503 and "s3" in json.loads(text)["checks"]
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
    resp = await client.post("/upload", data=_form(1))
    text = await resp.text()
    assert resp.status == 503, text
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
