"""What every upload handler reaches: one :class:`UploadContext` on the app.

Handlers take ``request`` and find settings, backends, the imageproc client,
the preset table and the cost limits in ``request.app[CONTEXT]``; nothing
else is stored on the app for them. The job-id check, who may see a job
and the "job not found" answer live here and only here: a malformed id, an
unknown id and another principal's job (``UPLOAD_VISIBILITY=own``) all get
the same 404, so a client cannot tell them apart.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from imgpipe.broker.protocol import Broker
from imgpipe.client.imageproc import ImageprocClient
from imgpipe.credentials.signing import trust_anchors
from imgpipe.domain.events import provenance_event_id
from imgpipe.domain.pipeline import BUILTIN_PRESETS, Preset, all_presets, parse_pipeline
from imgpipe.errors import ImgpipeError
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.storage.protocol import ObjectStore
from imgpipe.upload.auth import principal_of
from imgpipe.upload.intake import input_key
from imgpipe.upload.limits import HeavySlots, RateLimit, RerunCache
from imgpipe.upload.render import Renderer
from imgpipe.upload.settings import UploadSettings
from imgpipe.upload.status import job_status

JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


@dataclass
class Backends:
    broker: Broker
    store: ObjectStore
    provenance: ProvenanceStore


class JobNotFound(ImgpipeError):
    reason = "job_not_found"
    status = 404


def is_job_id(text: str) -> bool:
    return JOB_ID.match(text) is not None


def job_id_of(request: web.Request) -> str:
    """The ``{job_id}`` of the route, or the 404 every unknown job gets."""
    job_id = request.match_info["job_id"]
    if not is_job_id(job_id):
        raise JobNotFound(f"There is no job '{job_id[:64]}': job ids are 32 hexadecimal digits.")
    return job_id


def no_such_job(job_id: str) -> JobNotFound:
    return JobNotFound(f"There is no job {job_id}.")


#: distinct pipeline texts :meth:`UploadContext.canonical_pipeline` remembers
CANONICAL_CACHE = 256


class UploadContext:
    """Settings, backends, the imageproc client (for verify), the presets and the limits."""

    def __init__(
        self,
        settings: UploadSettings,
        backends: Backends,
        presets: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = backends
        if presets is None:
            user = settings.presets()  # the IMGPIPE_PRESETS file, validated at start
            presets = {name: preset.pipeline for name, preset in user.items()}
        else:
            user = {name: Preset(name, spec) for name, spec in presets.items()}
        self.presets = {**BUILTIN_PRESETS, **presets}
        #: every preset with its description, for ``GET /presets`` and the page
        self.preset_entries = all_presets(user)
        self.imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_client_timeout)
        #: PEM of C2PA_TRUST_ANCHORS (read once at start): what Content Credentials are trusted
        self.anchors = trust_anchors(settings)
        self.heavy = HeavySlots(settings.upload_heavy_concurrency)
        self.verify_rate = RateLimit(settings.upload_verify_per_minute)
        self.reruns = RerunCache(settings.upload_verify_cache_seconds)
        self.render = Renderer(settings.upload_heavy_concurrency)
        self._canonical = functools.lru_cache(maxsize=CANONICAL_CACHE)(
            lambda spec: parse_pipeline(spec, self.presets).canonical())

    def canonical_pipeline(self, spec: str) -> str:
        """``spec`` parsed with these presets, canonical (raises ``PipelineError``).

        Remembered: nearly every upload names one of a few pipelines, and parsing one
        costs more than the rest of announcing its job."""
        return self._canonical(spec)

    def may_see(self, request: web.Request, owner: str | None) -> bool:
        """Whether the request's principal may see a job of ``owner``."""
        return self.settings.upload_visibility == "all" or owner == principal_of(request)

    async def job(self, request: web.Request, job_id: str) -> dict[str, Any] | None:
        """The job's status view, or None when there is no such job for this request."""
        view = await job_status(
            self.settings, self.backends.store, self.backends.provenance, job_id
        )
        return view if view is not None and self.may_see(request, view.get("owner")) else None

    async def require_job(self, request: web.Request, job_id: str) -> dict[str, Any]:
        view = await self.job(request, job_id)
        if view is None:
            raise no_such_job(job_id)
        return view

    async def require_visible(self, request: web.Request, job_id: str) -> None:
        """Raise the "job not found" answer unless the request may see ``job_id``.

        Cheap when every job is visible (no query); otherwise one read of the
        job's 'received' record, or of its uploaded object while it is queued.
        """
        if self.settings.upload_visibility != "all" and not self.may_see(
            request, await self.owner(job_id)
        ):
            raise no_such_job(job_id)

    async def owner(self, job_id: str) -> str | None:
        received = await self.backends.provenance.get(
            provenance_event_id(job_id, "upload", "job.received"))
        if received is not None:
            return received.get("owner")
        info = await self.backends.store.head(self.settings.s3_input_bucket, input_key(job_id))
        return info.metadata.get("owner") if info is not None else None

    async def close(self) -> None:
        await self.imageproc.close()
        await asyncio.to_thread(self.render.close)


CONTEXT: web.AppKey[UploadContext] = web.AppKey("upload", UploadContext)


def context_of(request: web.Request) -> UploadContext:
    return request.app[CONTEXT]
