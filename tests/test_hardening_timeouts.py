"""Issue 16, finding 8: slow clients. A connection that sends its headers one line at a
time is closed after UPLOAD_HEADER_TIMEOUT; an upload trickling bytes just under
UPLOAD_READ_TIMEOUT is refused (408) at UPLOAD_REQUEST_TIMEOUT; /healthz answers meanwhile.
The service runs through runtime.http.serve, as in production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from imgpipe.runtime.http import serve
from imgpipe.upload.app import create_app
from tests.hardening import Service
from tests.images import image_bytes


async def _served(service: Service, **settings: Any) -> tuple[str, Any]:
    await service.start(**settings)
    assert service.backends is not None
    runner = await serve(create_app(service.settings, service.backends), "127.0.0.1", 0, grace=1)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner


async def test_headers_sent_slowly_are_cut_off(service: Service) -> None:
    base, runner = await _served(service, upload_header_timeout=0.5)
    try:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /upload HTTP/1.1\r\nHost: imgpipe\r\n")
        await writer.drain()
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while not reader.at_eof() and time.monotonic() - started < 30:
                writer.write(b"X-Slow: 1\r\n")  # one header line at a time, never the end
                await writer.drain()
                async with http.get(f"{base}/healthz") as resp:
                    assert resp.status == 200
                try:
                    await asyncio.wait_for(reader.read(1), 0.2)
                except TimeoutError:
                    pass
        assert reader.at_eof(), "the slow connection was never closed"
        assert time.monotonic() - started < 30
        writer.close()
    finally:
        await runner.cleanup()


async def test_trickled_upload_hits_the_total_deadline(service: Service) -> None:
    base, runner = await _served(service, upload_request_timeout=1.5, upload_read_timeout=1)
    png = image_bytes(64, 64, ".png")

    async def trickle() -> AsyncIterator[bytes]:
        boundary = b"--b0undary\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for i in range(0, len(png), 64):
            yield png[i:i + 64]
            await asyncio.sleep(0.25)  # under the 1 s read timeout, for much longer in all
        yield b"\r\n--b0undary--\r\n"

    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{base}/upload", data=trickle(), headers={
                    "Content-Type": "multipart/form-data; boundary=b0undary"}) as resp:
                status, body = resp.status, await resp.json()
            assert time.monotonic() - started < 20
            assert status == 408 and body["error"]["reason"] == "upload_timeout", body
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
        assert service.backends is not None
        assert await service.backends.store.list_keys(service.settings.s3_input_bucket) == []
    finally:
        await runner.cleanup()
