"""What the upload service already has: the skip-what-is-done part of ``imgpipe submit``.

A file is already done when a job exists over the same content (its sha256)
with the same canonical pipelines and that job has not failed (queued,
processing or done). The service answers from its provenance record
(``GET /lineage/{sha256}``, then ``GET /jobs``), so only jobs the asker may
see count (``UPLOAD_VISIBILITY``), and a job counts once its ``job.received``
record is stored, usually within a second of its upload.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from imgpipe.client.api import CHUNK, ApiError, Client

#: Lookups a submit runs at once: the lineage route is one of the service's few heavy slots.
LOOKUPS = 1
#: Times a lookup is tried again when the service says it is busy (429/503 with Retry-After).
BUSY_TRIES = 30


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def file_sha256(path: Path) -> str:
    """The file's sha256, read in chunks in a thread."""
    return await asyncio.to_thread(_sha256_of, path)


async def _lineage(client: Client, sha256: str) -> dict[str, Any] | None:
    for _ in range(BUSY_TRIES):
        try:
            return await client.lineage(sha256)
        except ApiError as exc:
            if exc.status not in (429, 503) or exc.retry_after is None:
                raise
            await asyncio.sleep(exc.retry_after)
    return await client.lineage(sha256)


def _pick(views: list[dict[str, Any]], pipelines: list[str]) -> dict[str, Any] | None:
    """The job to reuse among ``views``: same pipelines, not failed; done ones first,
    then the latest."""
    usable = [v for v in views if list(v.get("pipelines") or []) == pipelines
              and v.get("status") != "failed"]
    usable.sort(key=lambda v: (v.get("status") == "done", str(v.get("received_at") or "")))
    return usable[-1] if usable else None


async def existing_job(
    client: Client, sha256: str, pipelines: list[str]
) -> dict[str, Any] | None:
    """The view of a job the asker may see over content ``sha256`` with ``pipelines``
    (canonical) that has not failed, or None."""
    found = await _lineage(client, sha256)
    if found is None:
        return None
    job_ids = [str(u["job_id"]) for u in found.get("uploads") or [] if u.get("sha256") == sha256]
    if not job_ids:
        return None
    views = await client.jobs(job_ids)
    return _pick(list(views.values()), pipelines)


async def canonical_pipelines(client: Client, pipeline: str | None) -> list[str]:
    """The canonical pipelines a submit's jobs will run (the service's default when none)."""
    spec = pipeline or await client.default_pipeline()
    checked = await client.validate(spec)
    return [str(checked["canonical"])]


async def already_done(
    client: Client, paths: list[Path], pipelines: list[str], *, parallel: int = 4
) -> dict[Path, dict[str, Any]]:
    """For each of ``paths`` that is already done, the view of the job that did it."""
    hashing = asyncio.Semaphore(parallel)
    lookups = asyncio.Semaphore(LOOKUPS)
    found: dict[Path, dict[str, Any]] = {}

    async def one(path: Path) -> None:
        async with hashing:
            sha256 = await file_sha256(path)
        async with lookups:
            view = await existing_job(client, sha256, pipelines)
        if view is not None:
            found[path] = view

    await asyncio.gather(*(one(path) for path in paths))
    return found
