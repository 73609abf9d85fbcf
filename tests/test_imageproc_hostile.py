"""Hostile inputs: each refused with its own reason, never a 500, service unharmed."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator

import pytest
import pyvips
from aiohttp.test_utils import TestClient, TestServer

from imgpipe.imageproc import create_app
from imgpipe.imageproc.settings import ImageprocSettings
from tests.images import image_bytes


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000">'
    b'<rect width="4000" height="4000" fill="red"/></svg>'
)


def animated_gif(frames: int) -> bytes:
    strip = (pyvips.Image.xyz(16, 16 * frames)[1] * 3).cast("uchar").bandjoin([0, 0])
    strip = strip.copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 16)
    return bytes(strip.gifsave_buffer())


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    settings = ImageprocSettings(
        imageproc_max_pixels=25_000_000, imageproc_max_bytes=5_000_000, imageproc_max_frames=3
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


HOSTILE = [
    ("zero bytes", b"", 415, "unsupported_format"),
    ("random bytes", os.urandom(4096), 415, "unsupported_format"),
    ("text", b"hello, world\n" * 10, 415, "unsupported_format"),
    ("csv for the csv loader", b"1,2,3\n4,5,6\n", 415, "unsupported_format"),
    ("matrix for the matrix loader", b"2 2\n1 2\n3 4\n", 415, "unsupported_format"),
    ("svg", SVG, 415, "unsupported_format"),
    ("vips native header", b"\x08\xf2\xa6\xb6" + bytes(60), 415, "unsupported_format"),
    ("png claiming 30000x30000", png_claiming(30000, 30000), 413, "too_many_pixels"),
    ("png claiming 6000x6000", png_claiming(6000, 6000), 413, "too_many_pixels"),
    ("png with bad data", png_claiming(200, 200), 422, "corrupt_image"),
    ("gif with too many frames", animated_gif(5), 413, "too_many_pixels"),
]


@pytest.mark.parametrize(("what", "data", "status", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_input_is_refused_with_its_reason(
    client: TestClient, what: str, data: bytes, status: int, reason: str
) -> None:
    resp = await client.post("/process", params={"pipeline": "resize:w=64/format:png"}, data=data)
    body = await resp.json()
    assert (resp.status, body["error"]["reason"]) == (status, reason), (what, body)
    assert (await client.get("/healthz")).status == 200
    ok = await client.post("/process", data=image_bytes(64, 64))
    assert ok.status == 200


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("spec", ["thumbnail", "grayscale/format:png", "dither"])
async def test_truncated_jpeg_fails_instead_of_rendering_grey(
    client: TestClient, cut: float, spec: str
) -> None:
    data = image_bytes(900, 700, ".jpg", Q=95)
    resp = await client.post("/process", params={"pipeline": spec}, data=data[: int(len(data) * cut)])
    assert resp.status == 422
    assert (await resp.json())["error"]["reason"] == "corrupt_image"


async def test_wrong_extension_and_content_type_do_not_matter(client: TestClient) -> None:
    png = image_bytes(120, 80, ".png")
    resp = await client.post(
        "/process", data=png, headers={"Content-Type": "image/jpeg", "Content-Disposition": 'attachment; filename="photo.jpg"'}
    )
    assert resp.status == 200
    assert resp.headers["X-Imgpipe-Input-Format"] == "png"


async def test_formats_outside_the_allowlist_are_refused() -> None:
    settings = ImageprocSettings(imageproc_formats="jpeg")
    async with TestClient(TestServer(create_app(settings))) as c:
        resp = await c.post("/process", data=image_bytes(32, 32, ".png"))
        assert resp.status == 415
        assert (await resp.json())["error"]["reason"] == "unsupported_format"
        assert (await c.post("/process", data=image_bytes(32, 32))).status == 200
    configure_all = ImageprocSettings()
    async with TestClient(TestServer(create_app(configure_all))) as c:
        assert (await c.post("/process", data=image_bytes(32, 32, ".png"))).status == 200


async def test_output_larger_than_allowed_is_refused(client: TestClient) -> None:
    resp = await client.post(
        "/process",
        params={"pipeline": "resize:w=16000,h=16000,fit=fill/format:png"},
        data=image_bytes(32, 32),
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["reason"] == "too_many_pixels"
