"""The two messages that start a job: its image event and its ``job.received`` record.

Upload and ingest start jobs the same way: the image event goes to the first
stage (``AMQP_EXCHANGE_SUBSCRIBE``), the record to provenance
(``AMQP_EXCHANGE_PROV``). The record's input is the image where it is kept
(the input bucket for an upload, the object's own bucket and key for an
ingest), so the provenance names the original location.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgpipe import __version__
from imgpipe.domain.events import (
    ImageEvent,
    ObjectRef,
    ProvenanceEvent,
    SoftwareAgent,
    provenance_event_id,
)


@dataclass(frozen=True)
class NewJob:
    image_event: ImageEvent
    received: ProvenanceEvent


def new_job(
    job_id: str,
    image: ObjectRef,
    pipelines: tuple[str, ...],
    *,
    filename: str | None,
    client: str | None = None,
    owner: str | None = None,
    software: str = "imgpipe-upload",
) -> NewJob:
    """The messages of a new job ``job_id`` over ``image`` running ``pipelines``."""
    image_event = ImageEvent(kind="uploaded", job_id=job_id, stage="upload", image=image,
                             pipelines=pipelines, filename=filename)
    received = ProvenanceEvent(
        event_id=provenance_event_id(job_id, "upload", "job.received"),
        kind="job.received", job_id=job_id, stage="upload", input=image, output=image,
        pipelines=pipelines, filename=filename, client=client, owner=owner,
        agents=(SoftwareAgent(name=software, version=__version__),),
    )
    return NewJob(image_event, received)
