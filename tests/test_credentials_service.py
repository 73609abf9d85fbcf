"""imageproc signs every output when C2PA signing is configured; off, nothing changes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.credentials.chain import ChainFiles, ensure_chain
from imgpipe.credentials.reading import inspect
from imgpipe.imageproc import create_app
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.runtime.config import load
from tests.images import image_bytes


@pytest.fixture
def chain(tmp_path: Path) -> ChainFiles:
    return ensure_chain(tmp_path / "chain")


@pytest.fixture
async def signing(chain: ChainFiles) -> AsyncIterator[TestClient[object, object]]:
    settings = load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=chain.chain,
                    c2pa_private_key=chain.key, c2pa_record_url="http://x.test/jobs/{job_id}/provenance")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
async def plain() -> AsyncIterator[TestClient[object, object]]:
    async with TestClient(TestServer(create_app(ImageprocSettings()))) as c:
        yield c


async def test_outputs_are_signed_and_describe_the_step(
        signing: TestClient, plain: TestClient, chain: ChainFiles) -> None:
    source = image_bytes(320, 240)
    sha = hashlib.sha256(source).hexdigest()
    headers = {"X-Imgpipe-Job": "c" * 32, "X-Imgpipe-Stage": "thumbs",
               "X-Imgpipe-Input-Sha256": sha, "X-Imgpipe-Filename": "photo%20one.jpg"}
    resp = await signing.post("/process", params={"pipeline": "resize:w=64/format:webp"},
                              data=source, headers=headers)
    body = await resp.read()
    assert resp.status == 200, body
    assert resp.headers["X-Imgpipe-Credentials"] == "c2pa"
    assert resp.headers["X-Imgpipe-Sha256"] == hashlib.sha256(body).hexdigest()
    unsigned = await plain.post("/process", params={"pipeline": "resize:w=64/format:webp"},
                                data=source)
    payload = await unsigned.read()
    # the payload is what libvips made, the same with signing on or off
    assert resp.headers["X-Imgpipe-Payload-Sha256"] == hashlib.sha256(payload).hexdigest()
    assert unsigned.headers["X-Imgpipe-Payload-Sha256"] == unsigned.headers["X-Imgpipe-Sha256"]
    assert "X-Imgpipe-Credentials" not in unsigned.headers

    found = inspect(body, "image/webp", chain.ca.read_text())
    assert found.verdict == "trusted", found.failures
    manifest = found.chain[0]
    assert manifest.ingredients[0]["title"] == "photo one.jpg"
    assert manifest.ingredients[0]["instance_id"] == f"sha256:{sha}"
    step = manifest.imgpipe or {}
    assert (step["job_id"], step["stage"], step["pipeline"]) == (
        "c" * 32, "thumbs", "resize:w=64/format:webp")
    assert step["record"]["url"] == f"http://x.test/jobs/{'c' * 32}/provenance"
    assert {s["name"] for s in step["software"]} >= {"imgpipe-imageproc", "libvips", "c2pa-rs"}


async def test_a_wrong_input_sha256_is_refused(signing: TestClient) -> None:
    resp = await signing.post("/process", data=image_bytes(64, 64),
                              headers={"X-Imgpipe-Input-Sha256": "0" * 64})
    assert resp.status == 422
    assert (await resp.json())["error"]["reason"] == "input_changed"
    resp = await signing.post("/process", data=image_bytes(64, 64),
                              headers={"X-Imgpipe-Input-Sha256": "nothex"})
    assert resp.status == 400
    assert (await resp.json())["error"]["reason"] == "invalid_header"


async def test_signing_off_gives_todays_output(plain: TestClient) -> None:
    resp = await plain.post("/process", data=image_bytes(64, 64),
                            headers={"X-Imgpipe-Job": "d" * 32})
    body = await resp.read()
    assert resp.status == 200
    assert inspect(body, "image/jpeg").verdict == "none"


async def test_a_signature_that_cannot_be_made_is_a_transient_refusal(chain: ChainFiles) -> None:
    """A time-stamp authority that does not answer: 503 signing_failed (the runner retries)."""
    settings = load(ImageprocSettings, c2pa_sign="on", c2pa_cert_chain=chain.chain,
                    c2pa_private_key=chain.key, c2pa_tsa_url="http://127.0.0.1:9")
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.post("/process", data=image_bytes(64, 64))
        assert resp.status == 503
        assert (await resp.json())["error"]["reason"] == "signing_failed"
