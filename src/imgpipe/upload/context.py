"""What every upload handler reaches: one :class:`UploadContext` on the app.

Handlers take ``request`` and find settings, backends, the imageproc client
and the preset table in ``request.app[CONTEXT]``; nothing else is stored on
the app for them. The job-id check and the "job not found" answer live here
and only here: a malformed id and an unknown id get the same 404, so a
client cannot tell the two apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from imgpipe.broker.protocol import Broker
from imgpipe.client.imageproc import ImageprocClient
from imgpipe.credentials.signing import trust_anchors
from imgpipe.domain.pipeline import BUILTIN_PRESETS, Preset, all_presets
from imgpipe.errors import ImgpipeError
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import UploadSettings
from imgpipe.storage.protocol import ObjectStore
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


class UploadContext:
    """Settings, backends, the imageproc client (for verify) and the presets."""

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

    async def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's status view, or None when imgpipe never accepted such a job."""
        return await job_status(
            self.settings, self.backends.store, self.backends.provenance, job_id
        )

    async def require_job(self, job_id: str) -> dict[str, Any]:
        view = await self.job(job_id)
        if view is None:
            raise no_such_job(job_id)
        return view

    async def close(self) -> None:
        await self.imageproc.close()


CONTEXT: web.AppKey[UploadContext] = web.AppKey("upload", UploadContext)


def context_of(request: web.Request) -> UploadContext:
    return request.app[CONTEXT]
