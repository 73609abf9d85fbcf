"""Provenance events of made-up jobs, for tests of the PROV model and queries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from imgpipe.domain.events import (
    ObjectRef,
    ProvenanceEvent,
    ProvenanceKind,
    SoftwareAgent,
    new_id,
    provenance_event_id,
)

RUNNER = SoftwareAgent(name="imgpipe-runner", version="0.1.0", instance="host-a:101")
VIPS = SoftwareAgent(name="libvips", version="8.18.7", instance="127.0.0.1:8080")
UPLOAD = SoftwareAgent(name="imgpipe-upload", version="0.1.0")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sha(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def ref(label: str, bucket: str = "out", **extra: Any) -> ObjectRef:
    return ObjectRef(bucket=bucket, key=f"objects/{label}", sha256=sha(label), size=len(label) * 10,
                     media_type="image/png", format="png", **extra)


def event(kind: ProvenanceKind, job_id: str, stage: str, pipeline: str = "", *,
          at: int = 0, **fields: Any) -> ProvenanceEvent:
    source = fields["input"].sha256 if pipeline and fields.get("input") else ""
    return ProvenanceEvent(
        event_id=provenance_event_id(job_id, stage, kind, pipeline, source), kind=kind,
        job_id=job_id,
        stage=stage, pipeline=pipeline or None, time=T0 + timedelta(seconds=at), **fields)


def received(job_id: str, image: ObjectRef, pipelines: tuple[str, ...] = ("thumbnail",)) -> ProvenanceEvent:
    return event("job.received", job_id, "upload", input=image, output=image, pipelines=pipelines,
                 filename="cat.png", client="127.0.0.1", agents=(UPLOAD,))


def step(job_id: str, stage: str, pipeline: str, source: ObjectRef, target: ObjectRef | None,
         *, at: int = 1, failed: bool = False, attempt: int = 1) -> list[ProvenanceEvent]:
    """A step's events: started, then completed (or failed)."""
    started = T0 + timedelta(seconds=at)
    events = [event("step.started", job_id, stage, pipeline, at=at, input=source,
                    started_at=started, agents=(RUNNER,))]
    if failed:
        events.append(event("step.failed", job_id, stage, pipeline, at=at + 1, input=source,
                            ended_at=started + timedelta(seconds=1), reason="bad_image",
                            message="not an image", agents=(RUNNER,)))
    else:
        events.append(event("step.completed", job_id, stage, pipeline, at=at + 1, input=source,
                            output=target, started_at=started, attempt=attempt,
                            ended_at=started + timedelta(seconds=1), agents=(RUNNER, VIPS)))
    return events


def chain(job_id: str | None = None) -> tuple[str, list[ProvenanceEvent]]:
    """upload -> thumbnailed -> dithered, one job."""
    job_id = job_id or new_id()
    original = ref(f"{job_id}-original", bucket="in")
    thumb = ref(f"{job_id}-thumb", width=256, height=192)
    dithered = ref(f"{job_id}-dithered", width=256, height=192)
    return job_id, [
        received(job_id, original),
        *step(job_id, "thumbnailed", "resize:w=256,h=256/format:png", original, thumb, at=1),
        *step(job_id, "dithered", "dither/format:png", thumb, dithered, at=3),
    ]
