"""imageproc over HTTP: POST /process, errors as JSON, catalogue, ops routes."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator

import pytest
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.imageproc import create_app
from imgpipe.imageproc.settings import ImageprocSettings
from tests.images import image_bytes


@pytest.fixture
async def client() -> AsyncIterator[TestClient[object, object]]:
    settings = ImageprocSettings(imageproc_max_pixels=4_000_000, imageproc_max_bytes=2_000_000)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def test_process_default_pipeline_is_a_jpeg_thumbnail(client: TestClient) -> None:
    data = image_bytes(640, 480)
    resp = await client.post("/process", data=data)
    body = await resp.read()
    assert resp.status == 200, body
    h = resp.headers
    assert h["Content-Type"] == "image/jpeg"
    assert (h["X-Imgpipe-Format"], h["X-Imgpipe-Width"], h["X-Imgpipe-Height"]) == ("jpeg", "256", "192")
    assert h["X-Imgpipe-Sha256"] == hashlib.sha256(body).hexdigest()
    assert h["X-Imgpipe-Pipeline"] == "resize:w=256,h=256/format:jpeg"
    assert h["X-Imgpipe-Vips-Version"].count(".") == 2
    assert (h["X-Imgpipe-Input-Format"], h["X-Imgpipe-Input-Width"], h["X-Imgpipe-Input-Height"]) == (
        "jpeg",
        "640",
        "480",
    )
    out = pyvips.Image.new_from_buffer(body, "")
    assert (out.width, out.height) == (256, 192)


async def test_pipeline_from_query_header_or_json(client: TestClient) -> None:
    data = image_bytes(300, 200, ".png")
    by_query = await client.post("/process", params={"pipeline": "resize:w=30/format:webp"}, data=data)
    by_header = await client.post(
        "/process", headers={"X-Imgpipe-Pipeline": "resize:w=30/format:webp"}, data=data
    )
    by_json = await client.post(
        "/process", params={"pipeline": '[{"op":"resize","w":30},{"op":"format","format":"webp"}]'},
        data=data,
    )
    bodies = [await r.read() for r in (by_query, by_header, by_json)]
    assert [r.status for r in (by_query, by_header, by_json)] == [200, 200, 200]
    assert by_query.headers["Content-Type"] == "image/webp"
    assert bodies[0] == bodies[1] == bodies[2]


async def test_dither_preset_gives_a_black_and_white_png(client: TestClient) -> None:
    resp = await client.post("/process", params={"pipeline": "dither"}, data=image_bytes(200, 100))
    assert resp.status == 200
    out = pyvips.Image.new_from_buffer(await resp.read(), "")
    assert out.get("vips-loader") == "pngload_buffer"
    assert (out.width, out.height, out.bands) == (200, 100, 1)
    assert set(bytes(out.write_to_memory())) <= {0, 255}


async def test_output_is_deterministic(client: TestClient) -> None:
    data = image_bytes(500, 400)
    for spec in ("thumbnail", "dither", "resize:w=99,h=50,fit=cover/format:webp"):
        first = await client.post("/process", params={"pipeline": spec}, data=data)
        second = await client.post("/process", params={"pipeline": spec}, data=data)
        assert await first.read() == await second.read()


@pytest.mark.parametrize(
    ("pipeline", "data", "status", "reason"),
    [
        ("resize:w=0", b"x", 400, "invalid_pipeline"),
        ("no-such-preset", b"x", 400, "unknown_preset"),
        ("thumbnail", b"", 415, "unsupported_format"),
        ("thumbnail", b"\x00garbage" * 100, 415, "unsupported_format"),
        ("thumbnail", io.BytesIO(b"x" * 2_000_001), 413, "too_large"),
    ],
)
async def test_refusals_are_json_with_a_reason(
    client: TestClient, pipeline: str, data: bytes | io.BytesIO, status: int, reason: str
) -> None:
    resp = await client.post("/process", params={"pipeline": pipeline}, data=data)
    assert resp.status == status
    body = await resp.json()
    assert body["error"]["reason"] == reason
    assert body["error"]["message"]


async def test_too_many_pixels_refused_before_decoding(client: TestClient) -> None:
    resp = await client.post("/process", data=image_bytes(2500, 2000, ".png"))
    assert resp.status == 413
    assert (await resp.json())["error"]["reason"] == "too_many_pixels"


async def test_truncated_jpeg_is_corrupt_not_grey(client: TestClient) -> None:
    data = image_bytes(800, 600)
    resp = await client.post("/process", data=data[: len(data) // 2])
    assert resp.status == 422
    assert (await resp.json())["error"]["reason"] == "corrupt_image"


async def test_catalogue_presets_and_ops_routes(client: TestClient) -> None:
    ops = await (await client.get("/operations")).json()
    names = {op["name"] for op in ops["operations"]}
    assert {"resize", "format", "dither"} <= names
    presets = await (await client.get("/presets")).json()
    assert presets["default"] == "thumbnail"
    assert presets["presets"]["thumbnail"] == "resize:w=256,h=256/format:jpeg"
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await client.post("/process", data=image_bytes(64, 64))
    metrics = await (await client.get("/metrics")).text()
    assert "imgpipe_imageproc_requests_total" in metrics
    assert "imgpipe_imageproc_processing_seconds" in metrics


async def test_service_output_equals_in_process_output(client: TestClient) -> None:
    from imgpipe.domain.pipeline import parse_pipeline
    from imgpipe.imageproc.engine import process

    data = image_bytes(300, 200)
    for spec in ("dither", "dither:6,mono=false/format:png", "thumbnail"):
        resp = await client.post("/process", params={"pipeline": spec}, data=data)
        assert await resp.read() == process(data, parse_pipeline(spec)).data, spec
