"""A job's status, assembled from its provenance records.

A job is visible from the moment its 202 is sent: until the first
provenance record lands, the uploaded object itself (with its metadata)
says the job is queued.
"""

from __future__ import annotations

from typing import Any

from imgpipe.domain.lineage import job_records
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.storage.protocol import ObjectStore
from imgpipe.upload.intake import input_key
from imgpipe.upload.settings import UploadSettings


def _output_view(job_id: str, index: int, doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc.get("output") or {})
    return {
        "stage": doc.get("stage"),
        "pipeline": doc.get("pipeline"),
        "format": out.get("format"),
        "media_type": out.get("media_type"),
        "width": out.get("width"),
        "height": out.get("height"),
        "size": out.get("size"),
        "sha256": out.get("sha256"),
        "location": f"s3://{out.get('bucket')}/{out.get('key')}",
        "url": f"/jobs/{job_id}/outputs/{index}",
        "completed_at": doc.get("ended_at"),
        **({"payload_sha256": out["payload_sha256"],
            "credentials_url": f"/jobs/{job_id}/outputs/{index}/credentials"}
           if out.get("payload_sha256") else {}),
    }


def summarize(job_id: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Status, input and outputs of a job from its provenance documents."""
    docs = sorted(docs, key=lambda d: str(d.get("time", "")))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(str(doc.get("kind")), []).append(doc)
    received: dict[str, Any] | None = next(iter(by_kind.get("job.received", [])), None)
    completed = by_kind.get("step.completed", [])
    failed = by_kind.get("step.failed", [])
    started = by_kind.get("step.started", [])
    done_keys = {(d.get("stage"), d.get("pipeline")) for d in completed}
    open_failures = [d for d in failed if (d.get("stage"), d.get("pipeline")) not in done_keys]
    expected = len((received or {}).get("pipelines") or []) or 1
    if open_failures:
        status = "failed"
    elif completed and len(done_keys) >= expected:
        status = "done"
    elif started or completed:
        status = "processing"
    else:
        status = "queued"
    first = received or docs[0]
    source = first.get("input") or {}
    view: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "filename": first.get("filename"),
        "owner": (received or {}).get("owner"),
        "pipelines": (received or {}).get("pipelines") or sorted({str(d.get("pipeline")) for d in docs}),
        "received_at": (received or {}).get("time"),
        "input": {
            "sha256": source.get("sha256"),
            "size": source.get("size"),
            "media_type": source.get("media_type"),
            "format": source.get("format"),
            "location": f"s3://{source.get('bucket')}/{source.get('key')}" if source else None,
        },
        "outputs": [_output_view(job_id, i, d) for i, d in enumerate(completed)],
        "provenance_url": f"/jobs/{job_id}/provenance",
    }
    if open_failures:
        last = open_failures[-1]
        view["error"] = {
            "reason": last.get("reason"),
            "message": last.get("message"),
            "stage": last.get("stage"),
            "pipeline": last.get("pipeline"),
        }
    return view


async def job_status(
    settings: UploadSettings, store: ObjectStore, provenance: ProvenanceStore, job_id: str
) -> dict[str, Any] | None:
    """The job's view, or None when imgpipe never accepted such a job."""
    docs = await job_records(provenance, job_id)
    if docs:
        return summarize(job_id, docs)
    info = await store.head(settings.s3_input_bucket, input_key(job_id))
    if info is None:
        return None
    return {
        "job_id": job_id,
        "status": "queued",
        "filename": info.metadata.get("filename"),
        "owner": info.metadata.get("owner"),
        "pipelines": [],
        "input": {"size": info.size, "media_type": info.content_type,
                  "format": info.metadata.get("format"),
                  "location": f"s3://{settings.s3_input_bucket}/{input_key(job_id)}"},
        "outputs": [],
        "provenance_url": f"/jobs/{job_id}/provenance",
    }
