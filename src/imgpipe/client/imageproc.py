"""The client of the imageproc HTTP service (runners, and verification re-runs)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp

from imgpipe.errors import PermanentError, TransientError, Unavailable

#: imageproc answers these for input that will never process; anything else is worth a retry.
PERMANENT_STATUSES = {400, 413, 415, 422}
#: imageproc is overloaded or not ready: wait for it without spending an attempt.
UNAVAILABLE_STATUSES = {429, 503}
#: imageproc's own time limit ran out (its 504 with this reason). The same input and pipeline
#: would take as long again, and the limit may not have stopped the work: never retried.
DEADLINE_REASON = "timeout"


@dataclass(frozen=True)
class Processed:
    body: bytes
    """The output's bytes; empty when imageproc stored them itself (``process_object``)."""
    size: int
    media_type: str
    format: str
    width: int
    height: int
    sha256: str
    pipeline: str
    vips_version: str
    input_format: str | None
    input_width: int | None
    input_height: int | None
    pyvips_version: str = ""
    imageproc_version: str = ""
    payload_sha256: str = ""
    """sha256 of the image as libvips encoded it (equal to ``sha256`` unless signed)."""
    signed: bool = False
    """The body carries Content Credentials imageproc signed."""

    @property
    def payload(self) -> str:
        """What a re-run reproduces: the libvips payload's sha256."""
        return self.payload_sha256 or self.sha256


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _step_headers(job_id: str | None, stage: str | None, input_sha256: str | None,
                  filename: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream"}
    for name, value in (("Job", job_id), ("Stage", stage), ("Input-Sha256", input_sha256),
                        ("Filename", quote(filename, safe="") if filename else None)):
        if value:
            headers[f"X-Imgpipe-{name}"] = value
    return headers


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    """imageproc's refusal as :class:`PermanentError`, :class:`Unavailable` or transient."""
    reason, message = "imageproc_error", f"imageproc answered {resp.status}"
    try:
        error = (await resp.json())["error"]
        reason, message = str(error["reason"]), str(error["message"])
    except (aiohttp.ContentTypeError, KeyError, TypeError, ValueError):
        pass
    if resp.status in PERMANENT_STATUSES:
        raise PermanentError(message, reason=reason)
    if resp.status == 504 and reason == DEADLINE_REASON:
        raise PermanentError(
            f"{message} (imageproc's time limit: not retried, the same work would "
            "take as long again)", reason="imageproc_deadline")
    if resp.status in UNAVAILABLE_STATUSES:
        raise Unavailable(message, reason=reason,
                          retry_after=_seconds(resp.headers.get("Retry-After")))
    raise TransientError(message, reason=reason)


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


class ImageprocClient:
    def __init__(self, base_url: str, *, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        #: where imageproc runs, without any credentials the URL carries
        self.instance = parts.netloc.rpartition("@")[2]
        self.public_url = f"{parts.scheme}://{self.instance}{parts.path}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        #: imgpipe, libvips and pyvips versions of the last answer (empty until one came)
        self.versions: tuple[str, str, str] = ("", "", "")

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def process(self, data: bytes, pipeline: str, *, job_id: str | None = None,
                      stage: str | None = None, input_sha256: str | None = None,
                      filename: str | None = None) -> Processed:
        """Run ``pipeline`` over ``data``; the step's names go into a signed output's credentials.

        Raises :class:`PermanentError` (with imageproc's reason) for input that
        can never be processed or that ran past imageproc's own time limit
        (``imageproc_deadline``), and :class:`TransientError` for everything a
        retry may cure: imageproc unreachable, overloaded, not answering in
        this client's timeout, failing.
        """
        session = await self._client()
        with self._errors():
            async with session.post(
                f"{self.base_url}/process", params={"pipeline": pipeline}, data=data,
                headers=_step_headers(job_id, stage, input_sha256, filename),
            ) as resp:
                if resp.status != 200:
                    await _raise_for(resp)
                body = await resp.read()
                h = resp.headers
                self.versions = (h.get("X-Imgpipe-Version", ""),
                                 h.get("X-Imgpipe-Vips-Version", ""),
                                 h.get("X-Imgpipe-Pyvips-Version", ""))
                return Processed(
                    body=body,
                    size=len(body),
                    media_type=h.get("Content-Type", "application/octet-stream"),
                    format=h.get("X-Imgpipe-Format", ""),
                    width=int(h.get("X-Imgpipe-Width", "0")),
                    height=int(h.get("X-Imgpipe-Height", "0")),
                    sha256=h.get("X-Imgpipe-Sha256", ""),
                    pipeline=h.get("X-Imgpipe-Pipeline", pipeline),
                    vips_version=h.get("X-Imgpipe-Vips-Version", ""),
                    input_format=h.get("X-Imgpipe-Input-Format"),
                    input_width=_int(h.get("X-Imgpipe-Input-Width")),
                    input_height=_int(h.get("X-Imgpipe-Input-Height")),
                    pyvips_version=h.get("X-Imgpipe-Pyvips-Version", ""),
                    imageproc_version=h.get("X-Imgpipe-Version", ""),
                    payload_sha256=h.get("X-Imgpipe-Payload-Sha256", ""),
                    signed=h.get("X-Imgpipe-Credentials") == "c2pa",
                )

    async def process_object(self, pipeline: str, *, input_url: str, input_sha256: str,
                             input_size: int | None, output_url: str,
                             output_headers: Mapping[str, str], job_id: str | None = None,
                             stage: str | None = None, filename: str | None = None) -> Processed:
        """Have imageproc read the input from ``input_url`` and write the output to
        ``output_url`` itself (presigned S3 URLs); only the answer's facts come back.

        The returned :class:`Processed` has an empty ``body``; errors are raised as
        by :meth:`process`, S3 failures included (imageproc's 503 ``storage_unavailable``
        holds the work, its 422 ``input_missing``/``input_changed`` fail it).
        """
        message = {"pipeline": pipeline,
                   "input": {"url": input_url, "sha256": input_sha256, "size": input_size},
                   "output": {"url": output_url, "headers": dict(output_headers),
                              "within_s": self._timeout.total}}
        headers = _step_headers(job_id, stage, input_sha256, filename)
        headers["Content-Type"] = "application/json"
        session = await self._client()
        with self._errors():
            async with session.post(f"{self.base_url}/process-object", json=message,
                                    headers=headers) as resp:
                if resp.status != 200:
                    await _raise_for(resp)
                done = await resp.json()
                versions = done["versions"]
                self.versions = (versions["imgpipe"], versions["libvips"], versions["pyvips"])
                source = done["input"]
                return Processed(
                    body=b"", size=int(done["size"]), media_type=done["media_type"],
                    format=done["format"], width=int(done["width"]),
                    height=int(done["height"]), sha256=done["sha256"],
                    pipeline=done["pipeline"], vips_version=versions["libvips"],
                    input_format=source.get("format"), input_width=source.get("width"),
                    input_height=source.get("height"), pyvips_version=versions["pyvips"],
                    imageproc_version=versions["imgpipe"],
                    payload_sha256=done["payload_sha256"],
                    signed=done.get("credentials") == "c2pa",
                )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A failure to talk to imageproc as the error the delivery policy acts on."""
        try:
            yield
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransientError(
                f"imageproc did not answer within {self._timeout.total:g}s",
                reason="imageproc_timeout",
            ) from exc
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            raise Unavailable(
                f"imageproc at {self.public_url} is unreachable: {type(exc).__name__}",
                reason="imageproc_unavailable",
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientError(
                f"imageproc at {self.public_url} is unavailable: {type(exc).__name__}",
                reason="imageproc_unavailable",
            ) from exc

    async def check(self) -> None:
        session = await self._client()
        try:
            async with session.get(f"{self.base_url}/healthz") as resp:
                if resp.status != 200:
                    raise Unavailable(f"imageproc health answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"imageproc unreachable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
