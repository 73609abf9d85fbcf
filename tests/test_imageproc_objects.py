"""imageproc's object path: ``POST /process-object`` with presigned S3 URLs.

On the servers set the store presigns and imageproc reads and writes S3 itself;
the embedded store says it cannot presign (the runner keeps the bytes path).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.imageproc import create_app
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.runtime.config import S3Settings
from imgpipe.storage.protocol import ObjectStore, PresignedPut
from tests.backend_sets import settings_of
from tests.images import image_bytes

PIPELINE = "resize:w=64/format:webp"


@pytest.fixture
async def imageproc() -> AsyncIterator[TestClient[Any, Any]]:
    settings = ImageprocSettings(imageproc_max_pixels=4_000_000, imageproc_max_bytes=200_000)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


def buckets(backend_env: dict[str, str]) -> tuple[str, str]:
    s = settings_of(S3Settings, backend_env)
    return s.s3_input_bucket, s.s3_output_bucket


async def presigned(store: ObjectStore, backend_env: dict[str, str], data: bytes,
                    key: str = "in/a.png") -> tuple[str, PresignedPut]:
    inbox, outbox = buckets(backend_env)
    await store.put_bytes(inbox, key, data, content_type="image/png")
    source = await store.presign_get(inbox, key)
    target = await store.presign_put(outbox, "out/a.webp", content_type="image/webp",
                                     metadata={"job-id": "j1"})
    assert source is not None and target is not None
    return source, target


def message(source: str, sha256: str, target: PresignedPut, pipeline: str = PIPELINE
            ) -> dict[str, Any]:
    return {"pipeline": pipeline, "input": {"url": source, "sha256": sha256},
            "output": {"url": target.url, "headers": dict(target.headers)}}


async def test_embedded_store_cannot_presign(object_store: ObjectStore, backend_set: str,
                                             backend_env: dict[str, str]) -> None:
    inbox, outbox = buckets(backend_env)
    await object_store.put_bytes(inbox, "k", b"x", content_type="text/plain")
    get = await object_store.presign_get(inbox, "k")
    put = await object_store.presign_put(outbox, "k", content_type="text/plain")
    if backend_set == "embedded":
        assert (get, put) == (None, None)
        return
    assert get is not None and put is not None
    assert get.startswith("http") and "X-Amz-Signature=" in get and "X-Amz-Expires=300" in get
    async with aiohttp.ClientSession() as http:
        async with http.get(get) as resp:
            assert (resp.status, await resp.read()) == (200, b"x")
        async with http.put(put.url, data=b"written", headers=put.headers) as resp:
            assert resp.status == 200, await resp.text()
        async with http.put(put.url, data=b"unsigned", headers={"Content-Type": "text/html"}
                            ) as resp:
            assert resp.status == 403  # the content type is part of the signature
    assert await object_store.get_bytes(outbox, "k") == b"written"


#: the tests below need a store that presigns: the servers set only
servers_only = pytest.mark.parametrize("backend_set", ["servers"], indirect=True)


@servers_only
async def test_process_object_writes_what_process_answers(
        object_store: ObjectStore, backend_env: dict[str, str],
        imageproc: TestClient[Any, Any]) -> None:
    data = image_bytes(300, 200, ".png")
    sha = hashlib.sha256(data).hexdigest()
    source, target = await presigned(object_store, backend_env, data)
    resp = await imageproc.post("/process-object", json=message(source, sha, target),
                                headers={"X-Imgpipe-Job": "j1"})
    done = await resp.json()
    assert resp.status == 200, done
    direct = await imageproc.post("/process", params={"pipeline": PIPELINE}, data=data)
    body = await direct.read()
    _, outbox = buckets(backend_env)
    stored = await object_store.get_bytes(outbox, "out/a.webp")
    assert stored == body
    assert done["sha256"] == hashlib.sha256(stored).hexdigest() == direct.headers["X-Imgpipe-Sha256"]
    assert (done["size"], done["format"], done["media_type"]) == (len(stored), "webp", "image/webp")
    assert (done["width"], done["height"], done["pipeline"]) == (64, 43, PIPELINE)
    assert done["input"] == {"format": "png", "width": 300, "height": 200}
    assert done["credentials"] is None and done["payload_sha256"] == done["sha256"]
    info = await object_store.head(outbox, "out/a.webp")
    assert info is not None and info.content_type == "image/webp"
    assert info.metadata.get("job-id") == "j1"


@servers_only
async def test_process_object_refusals(object_store: ObjectStore, backend_env: dict[str, str],
                                       imageproc: TestClient[Any, Any]) -> None:
    data = image_bytes(120, 80, ".png")
    sha = hashlib.sha256(data).hexdigest()
    source, target = await presigned(object_store, backend_env, data)
    _, outbox = buckets(backend_env)

    async def refused(body: dict[str, Any]) -> tuple[int, str]:
        resp = await imageproc.post("/process-object", json=body)
        error = (await resp.json())["error"]
        assert error["message"]
        return resp.status, error["reason"]

    assert await refused(message(source, "0" * 64, target)) == (422, "input_changed")
    assert await object_store.head(outbox, "out/a.webp") is None  # nothing written
    missing = await object_store.presign_get(buckets(backend_env)[0], "in/none.png")
    assert missing is not None
    assert await refused(message(missing, sha, target)) == (422, "input_missing")
    assert await refused(message("file:///etc/passwd", sha, target)) == (400, "invalid_request")
    assert await refused({**message(source, sha, target),
                          "output": {"url": "ftp://x/y"}}) == (400, "invalid_request")
    assert await refused(message(source, sha[:10], target)) == (400, "invalid_request")
    expired = PresignedPut(target.url, {"Content-Type": "text/plain"})  # signature mismatch
    assert await refused(message(source, sha, expired)) == (422, "storage_refused")
    assert await refused(message(source, sha, target, "nope")) == (400, "unknown_preset")
    late = message(source, sha, target)
    late["output"]["within_s"] = 0.001  # the caller stopped waiting before the output was ready
    assert await refused(late) == (504, "caller_gone")
    assert await object_store.head(outbox, "out/a.webp") is None

    big = image_bytes(600, 600, ".png", compression=0)
    assert len(big) > 200_000
    big_source, _ = await presigned(object_store, backend_env, big, "in/big.png")
    assert await refused(message(big_source, hashlib.sha256(big).hexdigest(), target)
                         ) == (413, "too_large")

    closed = "http://127.0.0.1:9/bucket/key"  # discard port: nothing listens
    assert await refused(message(closed, sha, target)) == (503, "storage_unavailable")


@servers_only
async def test_process_object_follows_no_redirect(
        object_store: ObjectStore, backend_env: dict[str, str],
        imageproc: TestClient[Any, Any]) -> None:
    data = image_bytes(120, 80, ".png")
    source, target = await presigned(object_store, backend_env, data)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(source)

    app = web.Application()
    app.router.add_get("/elsewhere", redirect)
    async with TestServer(app) as elsewhere:
        body = message(str(elsewhere.make_url("/elsewhere")), hashlib.sha256(data).hexdigest(),
                       target)
        resp = await imageproc.post("/process-object", json=body)
        assert resp.status == 422
        assert (await resp.json())["error"]["reason"] == "storage_refused"
