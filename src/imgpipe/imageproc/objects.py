"""``POST /process-object``: imageproc reads its input from and writes its output to S3.

The caller (a runner) sends a small JSON message with a presigned GET for the
input and a presigned PUT for the output; imageproc holds no S3 credentials
and can reach only those two objects. Invariants:

* only ``http``/``https`` URLs, and no redirect is followed (a presigned URL
  names its object; a redirect would send imageproc elsewhere);
* the input is streamed into memory under the same byte limit as ``POST
  /process`` and hashed on the way; a sha256 other than the one the message
  names answers 422 ``input_changed`` (the reason signing uses) and nothing is
  written;
* the output's sha256 is computed once, when the engine returns it; the
  answer carries it so the runner never sees the bytes;
* no PUT starts after ``output.within_s`` (counted on imageproc's own clock from
  the request's arrival): the caller no longer waits, and a late write could
  replace its retry's output;
* S3 answering 404 is 422 ``input_missing``, another 4xx 422 ``storage_refused``
  (the same URL will never work); S3 unreachable or 5xx is 503
  ``storage_unavailable`` (the caller holds the work until it is back).
"""

from __future__ import annotations

import hashlib
import io
import time

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator

from imgpipe import __version__
from imgpipe.errors import ImgpipeError, InvalidInput, Unavailable
from imgpipe.imageproc import metrics
from imgpipe.imageproc.engine import Result, pyvips_version, vips_version
from imgpipe.imageproc.errors import (
    CallerGone,
    InputMismatch,
    InputMissing,
    StorageRefused,
    TooLarge,
)

HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("objects_http", aiohttp.ClientSession)
SHA256 = r"^[0-9a-f]{64}$"


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("only http and https URLs are accepted")
    return value


class InputObject(BaseModel):
    url: str
    sha256: str = Field(pattern=SHA256)
    size: int | None = Field(default=None, ge=0)

    _url = field_validator("url")(_http_url)


class OutputObject(BaseModel):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers the PUT must send: its presigned signature covers them."""
    within_s: float | None = Field(default=None, gt=0)
    """Seconds from the request's arrival after which the PUT is not started: the caller
    has stopped waiting and may have retried (a signed output's bytes differ per run)."""

    _url = field_validator("url")(_http_url)


class ObjectRequest(BaseModel):
    pipeline: str | None = None
    input: InputObject
    output: OutputObject


def parse_request(raw: bytes) -> ObjectRequest:
    try:
        return ObjectRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", reason="invalid_request") from None


def _refused(status: int, what: str) -> ImgpipeError:
    if 300 <= status < 400:
        return StorageRefused(f"the {what} URL answered a redirect ({status}); "
                              "imageproc follows none")
    if status == 404:
        return InputMissing(f"the {what} object is not there (S3 answered 404)")
    if status < 500:
        return StorageRefused(f"S3 refused the {what} ({status}): an expired or wrong URL")
    return Unavailable(f"S3 failed the {what} ({status})", reason="storage_unavailable")


async def fetch_input(http: aiohttp.ClientSession, source: InputObject, limit: int) -> bytes:
    """The input's bytes, size-capped and checked against their sha256 while streaming."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        async with http.get(source.url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _refused(resp.status, "input")
            if resp.content_length is not None and resp.content_length > limit:
                raise TooLarge(f"input has {resp.content_length} bytes, at most {limit} allowed")
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"input has more than {limit} bytes")
                digest.update(chunk)
                chunks.append(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unavailable(f"S3 is unreachable (input): {type(exc).__name__}",
                          reason="storage_unavailable") from exc
    if digest.hexdigest() != source.sha256:
        raise InputMismatch(f"the input hashes to sha256 {digest.hexdigest()}, "
                            f"not {source.sha256} as the request says")
    return b"".join(chunks)


async def store_output(http: aiohttp.ClientSession, target: OutputObject, data: bytes,
                       arrived: float) -> None:
    """PUT ``data`` unless ``target.within_s`` has passed since ``arrived`` (monotonic)."""
    if target.within_s is not None and time.monotonic() > arrived + target.within_s:
        raise CallerGone(f"the output was ready after the caller's {target.within_s:g} s; "
                         "not written")
    try:  # a BytesIO goes out in chunks (raw bytes over 1 MiB make aiohttp warn)
        async with http.put(target.url, data=io.BytesIO(data), headers=target.headers,
                            allow_redirects=False) as resp:
            await resp.read()
            if resp.status not in (200, 201, 204):
                raise _refused(resp.status, "output")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unavailable(f"S3 is unreachable (output): {type(exc).__name__}",
                          reason="storage_unavailable") from exc


def answer(result: Result, canonical: str, media_type: str, timings: dict[str, float]) -> web.Response:
    """The small JSON the runner needs instead of the output's bytes."""
    metrics.OUTPUT_BYTES.inc(len(result.data))
    sha256 = result.sha256  # the one pass over the output (a property: not read twice)
    return web.json_response({
        "sha256": sha256, "payload_sha256": result.payload_sha256 or sha256,
        "size": len(result.data),
        "format": result.format, "media_type": media_type,
        "width": result.width, "height": result.height, "pipeline": canonical,
        "input": {"format": result.input.format, "width": result.input.width,
                  "height": result.input.height},
        "credentials": "c2pa" if result.payload_sha256 is not None else None,
        "versions": {"imgpipe": __version__, "libvips": vips_version(),
                     "pyvips": pyvips_version()},
        "timings": {k: round(v, 6) for k, v in timings.items()},
    })

