"""The upload service's provenance API: a job's PROV record, lineage, verification.

* ``GET /jobs/{job_id}/provenance``: the job's record as PROV-JSON (one
  bundle ``job:<job_id>`` with every stage); ``?format=provn`` for PROV-N,
  ``?format=jsonld`` for PROV-JSON-LD.
* ``GET /lineage/{sha256}``: what that content was derived from and what was
  derived from it, across stages and jobs; ``?format=json|provn|jsonld`` gives
  the same records as a PROV document (one bundle per job).
* ``POST /jobs/{job_id}/verify``: re-run the job's recorded steps and compare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from imgpipe.client.imageproc import ImageprocClient
from imgpipe.domain.lineage import job_records, lineage
from imgpipe.domain.prov import FORMATS, job_document, jobs_document, serialize
from imgpipe.domain.verify import verify_job
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import UploadSettings
from imgpipe.storage.protocol import ObjectStore
from imgpipe.upload.intake import input_key

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
PROVN_TYPE = "text/provenance-notation"


@dataclass
class ProvenanceAPI:
    settings: UploadSettings
    provenance: ProvenanceStore
    store: ObjectStore
    imageproc: ImageprocClient


API: web.AppKey[ProvenanceAPI] = web.AppKey("provenance_api", ProvenanceAPI)


def _not_found(job_id: str) -> ImgpipeError:
    return ImgpipeError(f"There is no job {job_id}.", reason="job_not_found", status=404)


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not JOB_ID.match(job_id):
        raise ImgpipeError(f"There is no job '{job_id[:64]}': job ids are 32 hexadecimal digits.",
                           reason="job_not_found", status=404)
    return job_id


async def _pending_or_unknown(api: ProvenanceAPI, job_id: str) -> ImgpipeError:
    if await api.store.head(api.settings.s3_input_bucket, input_key(job_id)) is None:
        return _not_found(job_id)
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


async def get_provenance(request: web.Request) -> web.Response:
    """The job's whole record as PROV-JSON, PROV-N or PROV-JSON-LD."""
    api = request.app[API]
    job_id = _job_id(request)
    fmt = _format(request, "json")
    assert fmt is not None
    docs = await job_records(api.provenance, job_id)
    if not docs:
        raise await _pending_or_unknown(api, job_id)
    return _prov_response(serialize(job_document(job_id, docs), fmt), fmt)


async def get_lineage(request: web.Request) -> web.Response:
    """Ancestors and descendants of an image, by content hash."""
    api = request.app[API]
    fmt = _format(request, None)
    found = await lineage(api.provenance, request.match_info["sha256"])
    if fmt is not None:
        return _prov_response(serialize(jobs_document(found.records.values()), fmt), fmt)
    body = found.to_dict()
    body["prov_url"] = f"/lineage/{found.sha256}?format=json"
    return web.json_response(body)


async def post_verify(request: web.Request) -> web.Response:
    """Re-run the job's recorded steps through imageproc and compare hashes."""
    api = request.app[API]
    job_id = _job_id(request)
    report = await verify_job(job_id, api.provenance, api.store, api.imageproc)
    if report is None:
        raise await _pending_or_unknown(api, job_id)
    return web.json_response(report.to_dict())


def add_provenance_routes(
    app: web.Application, settings: UploadSettings, provenance: ProvenanceStore, store: ObjectStore
) -> None:
    """Add the provenance API to the upload service's ``app``."""
    imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_timeout)
    app[API] = ProvenanceAPI(settings, provenance, store, imageproc)
    app.router.add_get("/jobs/{job_id}/provenance", get_provenance)
    app.router.add_get("/lineage/{sha256}", get_lineage)
    app.router.add_post("/jobs/{job_id}/verify", post_verify)

    async def close(_: web.Application) -> None:
        await imageproc.close()

    app.on_cleanup.append(close)
