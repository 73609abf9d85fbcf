"""The provenance resource: a job's PROV record, lineage, verification.

* ``GET /jobs/{job_id}/provenance``: the job's record as PROV-JSON (one
  bundle ``job:<job_id>`` with every stage); ``?format=provn`` for PROV-N,
  ``?format=jsonld`` for PROV-JSON-LD.
* ``GET /lineage/{sha256}``: what that content was derived from and what was
  derived from it, across stages and jobs; ``?format=json|provn|jsonld`` gives
  the same records as a PROV document (one bundle per job).
* ``POST /jobs/{job_id}/verify``: re-run the job's recorded steps and compare.

Building and serialising PROV documents runs in worker processes
(``render.py``) and a lineage summary in a thread, never on the event loop; these routes are "heavy" (``UPLOAD_HEAVY_CONCURRENCY``), and a
verification's re-runs spend the principal's verify rate unless a recent
identical re-run answers them (``limits.py``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from imgpipe.credentials.agreement import RecordCheck
from imgpipe.domain.lineage import job_records, lineage
from imgpipe.domain.prov import FORMATS
from imgpipe.domain.verify import verify_job
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.upload.auth import principal_of
from imgpipe.upload.context import UploadContext, context_of, job_id_of, no_such_job
from imgpipe.upload.intake import input_key
from imgpipe.upload.limits import MeteredReprocessor

PROVN_TYPE = "text/provenance-notation"

routes = web.RouteTableDef()


async def _pending_or_unknown(ctx: UploadContext, job_id: str) -> ImgpipeError:
    if await ctx.backends.store.head(ctx.settings.s3_input_bucket, input_key(job_id)) is None:
        return no_such_job(job_id)
    return ImgpipeError(f"Job {job_id} is queued: its provenance is not recorded yet.",
                        reason="provenance_pending", status=404, retry_after=1)


def _format(request: web.Request, default: str | None) -> str | None:
    fmt = request.query.get("format")
    if fmt is None and PROVN_TYPE in request.headers.get("Accept", ""):
        fmt = "provn"
    if fmt is None:
        return default
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown format {fmt[:40]!r}: expected one of {', '.join(FORMATS)}.",
                           reason="invalid_format")
    return fmt


def _prov_response(text: str, fmt: str) -> web.Response:
    return web.Response(text=text, headers={"Content-Type": FORMATS[fmt]})


async def _json_response(body: Any) -> web.Response:
    text = await asyncio.to_thread(json.dumps, body)
    return web.Response(text=text, content_type="application/json")


@routes.get("/jobs/{job_id}/provenance")
async def get_provenance(request: web.Request) -> web.Response:
    """The job's whole record as PROV-JSON, PROV-N or PROV-JSON-LD."""
    ctx = context_of(request)
    job_id = job_id_of(request)
    fmt = _format(request, "json")
    assert fmt is not None
    await ctx.require_visible(request, job_id)
    async with ctx.heavy.slot("this PROV export"):
        docs = await job_records(ctx.backends.provenance, job_id)
        if not docs:
            raise await _pending_or_unknown(ctx, job_id)
        return _prov_response(await ctx.render.job(job_id, docs, fmt), fmt)


@routes.get("/lineage/{sha256}")
async def get_lineage(request: web.Request) -> web.Response:
    """Ancestors and descendants of an image, by content hash."""
    ctx = context_of(request)
    fmt = _format(request, None)

    async def visible(job_id: str) -> bool:
        return ctx.may_see(request, await ctx.owner(job_id))

    async with ctx.heavy.slot("this lineage query"):
        found = await lineage(ctx.backends.provenance, request.match_info["sha256"],
                              visible=None if ctx.settings.upload_visibility == "all" else visible)
        if fmt is not None:
            return _prov_response(await ctx.render.jobs(list(found.records.values()), fmt), fmt)
        body = await asyncio.to_thread(found.to_dict)
        body["prov_url"] = f"/lineage/{found.sha256}?format=json"
        return await _json_response(body)


@routes.post("/jobs/{job_id}/verify")
async def post_verify(request: web.Request) -> web.Response:
    """Re-run the job's recorded steps through imageproc and compare hashes."""
    ctx = context_of(request)
    job_id = job_id_of(request)
    await ctx.require_visible(request, job_id)
    principal = principal_of(request) or f"address {request.remote}"
    imageproc = MeteredReprocessor(ctx.imageproc, ctx.reruns, ctx.verify_rate, principal)
    async with ctx.heavy.slot("this verification"):
        report = await verify_job(job_id, ctx.backends.provenance, ctx.backends.store, imageproc,
                                  RecordCheck(ctx.anchors))
    if report is None:
        raise await _pending_or_unknown(ctx, job_id)
    return web.json_response(report.to_dict())
