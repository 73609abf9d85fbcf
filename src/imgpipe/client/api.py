"""A small asyncio client of the upload service's HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp

from imgpipe.client.sse import StreamRefused, follow

CHUNK = 256 * 1024
FINISHED = frozenset({"done", "failed"})
EVENTS_QUIET = 5.0
"""Seconds without a relevant event after which :meth:`Client.wait` reads the jobs again."""

Progress = Callable[[int], None]


class ApiError(Exception):
    """The service refused a request (``reason``, ``message``) or could not be reached.

    ``retry_after`` is the seconds a 503 or 429 asked to wait, when it said; ``details``
    what the refusal adds (say, ``queued_jobs`` of a multi-file upload that failed part-way).
    """

    def __init__(self, reason: str, message: str, status: int | None = None,
                 retry_after: float | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.details = details or {}


async def raise_for(resp: aiohttp.ClientResponse) -> None:
    """:class:`ApiError` for a refusal (4xx/5xx), with the service's reason and message."""
    if resp.status < 400:
        return
    details: dict[str, Any] = {}
    try:
        error = (await resp.json())["error"]
        reason, message = str(error["reason"]), str(error["message"])
        details = dict(error.get("details") or {})
    except (aiohttp.ContentTypeError, KeyError, TypeError, ValueError):
        reason, message = f"http_{resp.status}", (await resp.text())[:200] or resp.reason or ""
    try:
        retry_after = float(resp.headers["Retry-After"])
    except (KeyError, ValueError):
        retry_after = None
    raise ApiError(reason, message, resp.status, retry_after, details)


async def _file_chunks(path: Path, progress: Progress | None) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk


class Client:
    """Upload images, read jobs, download outputs. Use as ``async with Client(url) as c``."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 300.0) -> None:
        """``timeout``: seconds a request may take in all (0: no limit, for streams)."""
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout or None, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        #: how the last :meth:`wait` learnt of changes: ``events`` or ``polling``
        self.waited_by = ""

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client inside 'async with'")
        return self._session

    async def _get_json(self, path: str, **params: str) -> Any:
        try:
            async with self.session.get(self.base_url + path, params=params) as resp:
                await raise_for(resp)
                return await resp.json()
        except aiohttp.ClientError as exc:
            raise ApiError("unreachable", f"{self.base_url}: {exc}") from exc

    async def validate(self, pipeline: str) -> dict[str, Any]:
        """The pipeline's canonical form; :class:`ApiError` when it is refused."""
        result: dict[str, Any] = await self._get_json("/pipelines/validate", pipeline=pipeline)
        return result

    async def default_pipeline(self) -> str:
        """The pipeline the service runs when an upload names none."""
        body = await self._get_json("/presets")
        return str(body["default"])

    async def lineage(self, sha256: str) -> dict[str, Any] | None:
        """What the service records of content ``sha256`` (``GET /lineage/{sha256}``:
        uploads, steps, jobs the asker may see), or None when it has no record of it."""
        try:
            result: dict[str, Any] = await self._get_json(f"/lineage/{sha256}")
        except ApiError as exc:
            if exc.reason == "content_not_found":
                return None
            raise
        return result

    async def upload(
        self, source: Path | bytes, *, filename: str | None = None, pipeline: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload one image (a file, or bytes named ``filename``); returns its accepted job
        (``job_id``, ``sha256``, ...)."""
        [job] = await self.upload_files([(filename, source)], pipelines=[pipeline] if pipeline
                                        else [], progress=progress)
        return job

    async def upload_files(
        self, files: Sequence[tuple[str | None, Path | bytes]], *, pipelines: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """Upload several images in one request (each a path, or bytes with a name), every
        one with each of ``pipelines``; returns their accepted jobs in order."""
        writer = aiohttp.MultipartWriter("form-data")
        for name, source in files:
            body = _file_chunks(source, progress) if isinstance(source, Path) else source
            part = writer.append(body, {"Content-Type": "application/octet-stream"})
            filename = name or (source.name if isinstance(source, Path) else "image")
            part.set_content_disposition("form-data", name="file", filename=filename)
        params = [("pipeline", pipeline) for pipeline in pipelines]
        try:
            async with self.session.post(
                f"{self.base_url}/upload", data=writer, params=params
            ) as resp:
                await raise_for(resp)
                body = await resp.json()
        except aiohttp.ClientError as exc:
            raise ApiError("unreachable", f"{self.base_url}: {exc}") from exc
        jobs: list[dict[str, Any]] = body["jobs"]
        if progress is not None:
            progress(sum(len(s) for _, s in files if isinstance(s, bytes)))
        return jobs

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._get_json(f"/jobs/{job_id}")
        return result

    async def jobs(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Views of several jobs by id (at most 100 per request are sent)."""
        views: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), 100):
            body = await self._get_json("/jobs", ids=",".join(job_ids[start:start + 100]))
            views.update({view["job_id"]: view for view in body["jobs"]})
        return views

    async def wait(
        self, job_ids: list[str], *, interval: float = 0.5, timeout: float = 600.0,
        on_update: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Wait until every job is done or failed; raises TimeoutError after ``timeout``.

        Follows ``GET /events`` (a job's view is read again when one of its records
        arrives); when the service has no event stream or it keeps failing, polls.
        """
        views: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(timeout):
            try:
                return await self._wait_for_events(job_ids, views, on_update)
            except (StreamRefused, ConnectionError):
                self.waited_by = "polling"
            return await self._poll(job_ids, views, interval, on_update)

    async def _wait_for_events(
        self, job_ids: list[str], views: dict[str, dict[str, Any]],
        on_update: Callable[[dict[str, dict[str, Any]]], None] | None,
    ) -> dict[str, dict[str, Any]]:
        async def refresh(ids: list[str]) -> set[str]:
            views.update(await self.jobs(ids))
            if on_update is not None:
                on_update(views)
            return {i for i in job_ids if views.get(i, {}).get("status") not in FINISHED}

        stream = follow(self.session, f"{self.base_url}/events")
        following = asyncio.ensure_future(anext(stream))
        try:
            wanted = await refresh(job_ids)
            while wanted:
                done, _ = await asyncio.wait({following}, timeout=EVENTS_QUIET)
                if not done:  # nothing for a while: read again (covers a change made just
                    wanted = await refresh(sorted(wanted))  # before the stream was open)
                    continue
                event = following.result()
                following = asyncio.ensure_future(anext(stream))
                job = event.json().get("job_id") if event.event == "record" else None
                if job in wanted:
                    wanted = await refresh([job])
            self.waited_by = "events"
            return views
        finally:
            following.cancel()
            with contextlib.suppress(BaseException):
                await following
            await stream.aclose()

    async def _poll(
        self, job_ids: list[str], views: dict[str, dict[str, Any]], interval: float,
        on_update: Callable[[dict[str, dict[str, Any]]], None] | None,
    ) -> dict[str, dict[str, Any]]:
        while True:
            pending = [i for i in job_ids if views.get(i, {}).get("status") not in FINISHED]
            if not pending:
                return views
            views.update(await self.jobs(pending))
            if on_update is not None:
                on_update(views)
            if all(views.get(i, {}).get("status") in FINISHED for i in job_ids):
                return views
            await asyncio.sleep(interval)

    async def download(self, url: str, target: Path, *, sha256: str | None = None) -> int:
        """Save an output to ``target``; checks its sha256 when given. Returns its size."""
        digest = hashlib.sha256()
        size = 0
        partial = target.with_name(target.name + ".part")
        try:
            async with self.session.get(self.base_url + url) as resp:
                await raise_for(resp)
                with partial.open("wb") as handle:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        await asyncio.to_thread(handle.write, chunk)
        except aiohttp.ClientError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError("unreachable", f"{self.base_url}: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if sha256 and digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ApiError("checksum_mismatch", f"{url}: sha256 differs from the job's record")
        partial.replace(target)
        return size
