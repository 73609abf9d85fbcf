"""Reading a multipart upload: each ``file`` part streamed to S3 as it arrives."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from imgpipe.domain.events import new_id
from imgpipe.domain.formats import SNIFF_BYTES, media_type, sniff_format
from imgpipe.domain.keys import object_key
from imgpipe.errors import InvalidInput
from imgpipe.storage.protocol import ObjectStore, StoredObject
from imgpipe.upload import metrics

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME = 255
FORM_FIELDS = ("pipeline",)


@dataclass
class ReceivedFile:
    job_id: str
    filename: str | None
    format: str
    stored: StoredObject

    @property
    def media_type(self) -> str:
        return media_type(self.format)


@dataclass
class Intake:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)


def input_key(job_id: str) -> str:
    """Where a job's uploaded image lives in the input bucket."""
    return object_key("uploads", job_id)


def clean_filename(name: str | None) -> str | None:
    """The client's file name, kept as metadata only (never in a key).

    A name with a path (``/``, ``\\``, ``..``), control characters or more
    than 255 characters is refused: no browser sends one.
    """
    if not name or not name.strip():
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise InvalidInput("The file name contains control characters.",
                           reason="invalid_filename")
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        raise InvalidInput("The file name must be a plain name, not a path.",
                           reason="invalid_filename")
    if len(name) > MAX_FILENAME:
        raise InvalidInput(f"The file name is longer than {MAX_FILENAME} characters.",
                           reason="invalid_filename")
    return name.strip()


class UploadTimeout(InvalidInput):
    reason = "upload_timeout"
    status = 408


async def _read_chunk(part: BodyPartReader, size: int, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await part.read_chunk(size)
    except TimeoutError:
        raise _timed_out(timeout) from None


class TooManyPipelines(InvalidInput):
    reason = "too_many_pipelines"
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"At most {limit} pipelines can be asked for in one upload "
                         "(UPLOAD_MAX_PIPELINES).", limit=limit)
        metrics.LIMITED.labels(limit="pipelines").inc()


class TooLarge(InvalidInput):
    reason = "too_large"
    status = 413


async def _read_head(part: BodyPartReader, timeout: float) -> bytes:
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = await _read_chunk(part, CHUNK, timeout)
        if not chunk:
            break
        head += chunk
    return head


async def _stream_file(
    part: BodyPartReader, store: ObjectStore, bucket: str, max_bytes: int, index: int,
    timeout: float, owner: str | None,
) -> ReceivedFile:
    filename = clean_filename(part.filename)
    head = await _read_head(part, timeout)
    if not head:
        raise InvalidInput(
            f"File {index + 1} ({filename or 'unnamed'}) is empty.", reason="empty_file"
        )
    fmt = sniff_format(head)
    if fmt is None:
        raise InvalidInput(
            f"File {index + 1} ({filename or 'unnamed'}) is not an image imgpipe can read "
            "(supported: JPEG, PNG, GIF, WebP, TIFF, AVIF, HEIF).",
            reason="unsupported_format",
            status=415,
        )

    async def chunks() -> AsyncIterator[bytes]:
        total, chunk = 0, head
        while chunk:
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(
                    f"File {index + 1} ({filename or 'unnamed'}) is larger than the limit "
                    f"of {max_bytes} bytes."
                )
            yield chunk
            chunk = await _read_chunk(part, CHUNK, timeout)

    job_id = new_id()
    metadata = {"job-id": job_id, "format": fmt}
    if owner:
        metadata["owner"] = owner
    if filename:
        metadata["filename"] = filename.encode("ascii", "backslashreplace").decode()
    stored = await store.put_stream(
        bucket, input_key(job_id), chunks(), content_type=media_type(fmt), metadata=metadata
    )
    return ReceivedFile(job_id=job_id, filename=filename, format=fmt, stored=stored)


def _is_form_data(request: web.Request) -> bool:
    """``multipart/form-data``, read as the email parser behind ``request.content_type``
    reads it (type before the first ``;``, case-insensitive) without running it: its
    cache never hits, every request having a boundary of its own."""
    raw = request.headers.get(hdrs.CONTENT_TYPE, "")
    return raw.partition(";")[0].strip().lower() == "multipart/form-data"


async def read_upload(
    request: web.Request,
    store: ObjectStore,
    bucket: str,
    *,
    max_bytes: int,
    max_files: int,
    max_pipelines: int,
    pipelines_given: int = 0,
    read_timeout: float = 30.0,
    owner: str | None = None,
) -> Intake:
    """Stream every ``file`` part of a multipart request to ``bucket``.

    ``pipelines_given`` pipelines came in the query already; a ``pipeline``
    field past ``max_pipelines`` in all is refused as it arrives.

    On any error the objects already stored for this request are deleted
    before the error propagates: a refused request leaves nothing behind.
    """
    if not _is_form_data(request) and not request.content_type.startswith("multipart/"):
        if request.content_type in ("", "application/x-www-form-urlencoded"):
            raise InvalidInput(
                "No image received: send the images as multipart/form-data with one or "
                "more 'file' parts (curl -F file=@photo.jpg ...).",
                reason="missing_file",
            )
        raise InvalidInput(
            f"Content type {request.content_type!r} is not accepted: send the images as "
            "multipart/form-data with one or more 'file' parts (curl -F file=@photo.jpg ...).",
            reason="expected_multipart",
            status=415,
        )
    intake = Intake()
    try:
        reader: MultipartReader = await request.multipart()
        while (part := await _next_part(reader, read_timeout)) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidInput("Nested multipart bodies are not supported.", reason="invalid_form")
            name = part.name  # parsed from the part's headers on every read
            if name == "file":
                if len(intake.files) >= max_files:
                    raise InvalidInput(
                        f"At most {max_files} files can be sent in one upload.",
                        reason="too_many_files",
                        status=413,
                    )
                intake.files.append(await _stream_file(
                    part, store, bucket, max_bytes, len(intake.files), read_timeout, owner))
            elif name in FORM_FIELDS:
                if pipelines_given + len(intake.fields.get("pipeline", [])) >= max_pipelines:
                    raise TooManyPipelines(max_pipelines)
                async with asyncio.timeout(read_timeout):
                    value = await part.read(decode=True)
                if len(value) > MAX_FIELD_BYTES:
                    raise InvalidInput(f"Field '{name}' is too long.", reason="field_too_long")
                intake.fields.setdefault(name, []).append(value.decode("utf-8", "replace"))
            else:
                raise InvalidInput(
                    f"Unknown form field '{name}'; expected 'file' and optionally 'pipeline'.",
                    reason="unknown_field",
                )
    except BaseException:
        await discard(store, bucket, intake)
        raise
    return intake


async def _next_part(
    reader: MultipartReader, timeout: float
) -> MultipartReader | BodyPartReader | None:
    try:
        async with asyncio.timeout(timeout):
            return await reader.next()
    except TimeoutError:
        raise _timed_out(timeout) from None
    except (ValueError, HttpProcessingError) as exc:
        raise InvalidInput(
            "The multipart/form-data body is malformed (its boundaries or part headers "
            "cannot be read).", reason="invalid_form",
        ) from exc


#: Routes whose request streams for as long as it runs: no total deadline.
STREAMING = frozenset({"/ingest"})


def deadline_middleware(seconds: float) -> Middleware:
    """Every POST (a body to read) must be handled within ``seconds`` (UPLOAD_REQUEST_TIMEOUT):
    a client trickling bytes just under UPLOAD_READ_TIMEOUT cannot hold a request open."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path in STREAMING:
            return await handler(request)
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await handler(request)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise UploadTimeout(f"The request took longer than {seconds:g} seconds in all "
                                "(UPLOAD_REQUEST_TIMEOUT) and was abandoned; nothing was kept.",
                                limit=seconds) from None

    return middleware


def _timed_out(timeout: float) -> UploadTimeout:
    return UploadTimeout(f"The upload sent nothing for {timeout:g} seconds and was abandoned.")


async def discard(store: ObjectStore, bucket: str, intake: Intake) -> None:
    for received in intake.files:
        try:
            await store.delete(bucket, received.stored.key)
        except Exception:  # noqa: BLE001 - logged; the sweep finds it by its job-id metadata
            log.warning("could not delete refused upload", extra={"key": received.stored.key})
