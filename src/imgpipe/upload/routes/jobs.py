"""The job resource: status (one or several), outputs and the uploaded input.

* ``GET /jobs/{job_id}``: one job's status;
* ``GET /jobs?ids=...``: several jobs' status in one request (the page polls it);
* ``GET /jobs/{job_id}/outputs/{index}``: one result, streamed from the output bucket;
* ``GET /jobs/{job_id}/outputs/{index}/credentials``: its Content Credentials, validated;
* ``GET /jobs/{job_id}/input``: the uploaded image, for side-by-side previews.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from imgpipe.credentials.reading import inspect
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.storage.protocol import ObjectNotFound
from imgpipe.upload.context import context_of, is_job_id, job_id_of
from imgpipe.upload.intake import input_key
from imgpipe.upload.streaming import stream_object

MAX_IDS = 100
LIST_CONCURRENCY = 8
MAX_INDEX_DIGITS = 6

routes = web.RouteTableDef()


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    return web.json_response(await context_of(request).require_job(request, job_id_of(request)))


def _requested_ids(request: web.Request) -> list[str]:
    ids: list[str] = []
    for value in request.query.getall("ids", []):
        for item in value.split(","):
            item = item.strip().lower()
            if item and item not in ids:
                ids.append(item)
    if not ids:
        raise InvalidInput("Name the jobs: /jobs?ids=ID1,ID2 (up to 100).", reason="missing_ids")
    if len(ids) > MAX_IDS:
        raise InvalidInput(f"At most {MAX_IDS} job ids per request.", reason="too_many_ids")
    bad = [i for i in ids if not is_job_id(i)]
    if bad:
        raise InvalidInput(
            f"Not a job id: {bad[0][:64]!r} (job ids are 32 hexadecimal digits).",
            reason="invalid_job_id",
        )
    return ids


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Several jobs at once, in the order asked; unknown ids are listed as missing."""
    ctx = context_of(request)
    ids = _requested_ids(request)
    limit = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(job_id: str) -> dict[str, Any] | None:
        async with limit:
            return await ctx.job(request, job_id)

    views = await asyncio.gather(*(one(i) for i in ids))
    return web.json_response({
        "jobs": [v for v in views if v is not None],
        "missing": [i for i, v in zip(ids, views, strict=True) if v is None],
    })


async def _output(request: web.Request) -> tuple[str, int, dict[str, Any]]:
    """The route's job id, output index and that output's view (or 404)."""
    job_id = job_id_of(request)
    view = await context_of(request).require_job(request, job_id)
    text = request.match_info["index"]
    # only plain ASCII digits: int() would also take "-1", "+0", "0_0" and other scripts' digits
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_INDEX_DIGITS) or int(text) >= len(
        view["outputs"]
    ):
        raise ImgpipeError(
            f"Job {job_id} has no output {text[:40]!r} (it has {len(view['outputs'])}, "
            "numbered from 0 in plain digits).",
            reason="output_not_found", status=404,
        )
    index = int(text)
    return job_id, index, view["outputs"][index]


def _missing(job_id: str) -> ImgpipeError:
    return ImgpipeError(f"The output of job {job_id} is no longer stored.",
                        reason="output_missing", status=410)


@routes.get("/jobs/{job_id}/outputs/{index}")
async def get_output(request: web.Request) -> web.StreamResponse:
    """Stream one of a job's outputs from the output bucket."""
    ctx = context_of(request)
    job_id, index, output = await _output(request)
    bucket, key = output["location"].removeprefix("s3://").split("/", 1)
    return await stream_object(request, ctx.backends.store, bucket, key, headers={
        "Content-Type": output.get("media_type") or "application/octet-stream",
        "Content-Length": str(output.get("size") or 0),
        "X-Imgpipe-Sha256": output.get("sha256") or "",
        "Content-Disposition": f'inline; filename="{job_id}-{index}.{output.get("format") or "bin"}"',
    }, missing=_missing(job_id))


@routes.get("/jobs/{job_id}/outputs/{index}/credentials")
async def get_output_credentials(request: web.Request) -> web.Response:
    """The output's Content Credentials as JSON: verdict, failures, chain of manifests.

    Validated here against C2PA_TRUST_ANCHORS; ``verdict`` is ``none`` for an
    output signed by no one (signing off when it was made).
    """
    ctx = context_of(request)
    job_id, index, output = await _output(request)
    bucket, key = output["location"].removeprefix("s3://").split("/", 1)
    try:
        data = await ctx.backends.store.get_bytes(bucket, key)
    except ObjectNotFound:
        raise _missing(job_id) from None
    found = await asyncio.to_thread(inspect, data, output.get("media_type"), ctx.anchors)
    return web.json_response({"job_id": job_id, "output": index, "sha256": output.get("sha256"),
                              "anchors": ctx.anchors is not None, **found.to_dict()})


@routes.get("/jobs/{job_id}/input")
async def get_input(request: web.Request) -> web.StreamResponse:
    """Stream a job's uploaded image from the input bucket."""
    ctx = context_of(request)
    job_id = job_id_of(request)
    await ctx.require_visible(request, job_id)
    bucket, key = ctx.settings.s3_input_bucket, input_key(job_id)
    missing = ImgpipeError(f"There is no input for job {job_id}.", reason="input_not_found",
                           status=404)
    info = await ctx.backends.store.head(bucket, key)
    if info is None:
        raise missing
    return await stream_object(request, ctx.backends.store, bucket, key, headers={
        "Content-Type": info.content_type,
        "Content-Length": str(info.size),
        "Cache-Control": "private, max-age=3600",
    }, missing=missing)
