"""Streaming a stored object into an HTTP response (job inputs and outputs).

The first chunk is read before the response is prepared, so an object that
vanished between lookup and read still gets a JSON error, not a cut body.
Every streamed object is sent with ``nosniff``: a browser must never guess
that an uploaded "image" is HTML.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from imgpipe.errors import ImgpipeError
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore


async def stream_object(
    request: web.Request,
    store: ObjectStore,
    bucket: str,
    key: str,
    *,
    headers: Mapping[str, str],
    missing: ImgpipeError,
) -> web.StreamResponse:
    """Send ``bucket/key`` with ``headers``; raise ``missing`` when it is not stored."""
    chunks = store.iter_bytes(bucket, key)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except ObjectNotFound:
        raise missing from None
    response = web.StreamResponse(headers={**headers, "X-Content-Type-Options": "nosniff"})
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response
