"""Verifying a job's record by re-running it.

For every completed step of a job (every stage, every pipeline) the recorded
input is fetched from its location and checked against its sha256, the
recorded canonical pipeline is run again through imageproc, and the result's
sha256 is compared with the recorded output's; the stored output is checked
too. A step's outcome is one of :class:`Outcome`; a job is verified when
all its steps are.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from imgpipe.client.imageproc import Processed
from imgpipe.domain.events import utcnow
from imgpipe.domain.lineage import job_records, step_key
from imgpipe.errors import PermanentError
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore


class Outcome(enum.StrEnum):
    """What re-running a recorded step showed."""

    VERIFIED = "verified"
    """The stored input and output match the record, and the re-run reproduces the output."""
    INPUT_CHANGED = "input_changed"
    """The stored input is gone or no longer hashes to the recorded sha256."""
    OUTPUT_CHANGED = "output_changed"
    """The re-run reproduces the record, but the stored output is gone or altered."""
    OUTPUT_DIFFERS = "output_differs"
    """The re-run gives other bytes than recorded (see the libvips versions)."""
    RECORD_INCOMPLETE = "record_incomplete"
    """The record lacks what a re-run needs (no completed step, no input, no pipeline)."""
    CREDENTIALS_DISAGREE = "credentials_disagree"
    """The output's Content Credentials are invalid or say otherwise than the record."""


#: Which outcome speaks for a job whose steps disagree: the first found in this order.
SEVERITY = (Outcome.INPUT_CHANGED, Outcome.OUTPUT_CHANGED, Outcome.OUTPUT_DIFFERS,
            Outcome.CREDENTIALS_DISAGREE, Outcome.RECORD_INCOMPLETE, Outcome.VERIFIED)


class Reprocessor(Protocol):
    """What verification needs of imageproc."""

    async def process(self, data: bytes, pipeline: str) -> Processed: ...


class CredentialsCheck(Protocol):
    """Compares a stored output's Content Credentials with its record (see credentials/)."""

    async def __call__(self, data: bytes, doc: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass
class StepReport:
    """The verification of one step (one stage running one pipeline)."""

    stage: str
    pipeline: str
    outcome: Outcome
    message: str
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    libvips: dict[str, str | None] = field(default_factory=dict)
    credentials: dict[str, Any] | None = None


@dataclass
class JobReport:
    """The verification of a whole job."""

    job_id: str
    outcome: Outcome
    steps: list[StepReport]
    checked_at: str = field(default_factory=lambda: utcnow().isoformat())

    @property
    def verified(self) -> bool:
        return self.outcome is Outcome.VERIFIED

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of ``POST /jobs/{job_id}/verify``."""
        return {"job_id": self.job_id, "outcome": self.outcome.value, "verified": self.verified,
                "checked_at": self.checked_at, "steps": [asdict(s) for s in self.steps]}


def _engine(doc: Mapping[str, Any]) -> str | None:
    for agent in doc.get("agents") or []:
        if agent.get("name") == "libvips":
            return str(agent.get("version"))
    return None


async def _stored_sha(objects: ObjectStore, ref: Mapping[str, Any]) -> tuple[bytes | None, str | None]:
    try:
        data = await objects.get_bytes(str(ref["bucket"]), str(ref["key"]))
    except ObjectNotFound:
        return None, None
    return data, await _sha256(data)


async def _sha256(data: bytes) -> str:
    """The hex sha256 of ``data``, hashed in a thread (an image can be 100 MB)."""
    return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())


def _complete(doc: Mapping[str, Any]) -> str | None:
    """Why ``doc`` cannot be re-run, or None when it can."""
    for side in ("input", "output"):
        ref = doc.get(side)
        if not isinstance(ref, Mapping) or not all(ref.get(k) for k in ("bucket", "key", "sha256")):
            return f"the record has no complete {side} (location and sha256)"
    if not doc.get("pipeline"):
        return "the record has no pipeline"
    return None


async def verify_step(
    doc: Mapping[str, Any], objects: ObjectStore, imageproc: Reprocessor,
    credentials: CredentialsCheck | None = None,
) -> StepReport:
    """Verify one ``step.completed`` record.

    A signed output (its record names a ``payload_sha256``) is compared by
    payload: the re-run's libvips bytes against the recorded payload hash,
    since a signature embeds a time and random ids; the stored signed file is
    compared with the recorded ``sha256`` as is, and its credentials with the
    record by ``credentials`` when given.
    """
    report = StepReport(stage=str(doc.get("stage")), pipeline=str(doc.get("pipeline") or ""),
                        outcome=Outcome.RECORD_INCOMPLETE, message="")
    if problem := _complete(doc):
        report.message = problem
        return report
    source, target = dict(doc["input"]), dict(doc["output"])
    report.input = {"location": f"s3://{source['bucket']}/{source['key']}",
                    "recorded_sha256": source["sha256"]}
    report.output = {"location": f"s3://{target['bucket']}/{target['key']}",
                     "recorded_sha256": target["sha256"]}
    data, current = await _stored_sha(objects, source)
    report.input["stored_sha256"] = current
    if data is None or current != source["sha256"]:
        report.outcome = Outcome.INPUT_CHANGED
        report.message = ("the recorded input is no longer stored" if data is None else
                          "the stored input no longer matches its recorded sha256")
        return report
    recorded_engine = _engine(doc)
    try:
        result: Processed | None = await imageproc.process(data, report.pipeline)
    except PermanentError as exc:
        result = None
        report.message = f"the recorded pipeline no longer runs: {exc.message}"
    rerun = result.payload if result is not None else None
    recorded = target.get("payload_sha256") or target["sha256"]
    if target.get("payload_sha256"):
        report.output["recorded_payload_sha256"] = recorded
    report.output["rerun_sha256"] = rerun
    report.libvips = {"recorded": recorded_engine,
                      "current": result.vips_version if result is not None else None}
    stored, stored_sha = await _stored_sha(objects, target)
    report.output["stored_sha256"] = stored_sha
    if rerun != recorded:
        report.outcome = Outcome.OUTPUT_DIFFERS
        if result is not None:
            same = recorded_engine == result.vips_version
            report.message = (
                "re-running the pipeline gives other bytes with the same libvips "
                f"{result.vips_version}: the record does not describe this output"
                if same else
                f"re-running the pipeline gives other bytes; libvips changed from "
                f"{recorded_engine or 'an unrecorded version'} to {result.vips_version}"
            )
        return report
    if stored is None or stored_sha != target["sha256"]:
        report.outcome = Outcome.OUTPUT_CHANGED
        report.message = ("the recorded output is no longer stored" if stored is None else
                          "the stored output no longer matches its recorded sha256 "
                          "(the re-run reproduces the record)")
        return report
    if credentials is not None and target.get("payload_sha256"):
        report.credentials = await credentials(stored, doc)
        if not report.credentials["agrees"]:
            report.outcome = Outcome.CREDENTIALS_DISAGREE
            report.message = "the output's Content Credentials do not match the record: " + (
                "; ".join(report.credentials["differences"]))
            return report
    report.outcome = Outcome.VERIFIED
    report.message = "input, re-run and stored output all match the record"
    if report.credentials is not None:
        report.message += f"; its Content Credentials agree ({report.credentials['verdict']})"
    return report


def job_outcome(steps: Sequence[StepReport]) -> Outcome:
    found = {s.outcome for s in steps}
    return next(o for o in SEVERITY if o in found) if found else Outcome.RECORD_INCOMPLETE


async def verify_job(
    job_id: str, provenance: ProvenanceStore, objects: ObjectStore, imageproc: Reprocessor,
    credentials: CredentialsCheck | None = None,
) -> JobReport | None:
    """Verify every completed step of ``job_id``; None when nothing is recorded for it.

    Transient failures (S3, CouchDB or imageproc unreachable) raise
    :class:`~imgpipe.errors.TransientError`: no verdict is given then.
    """
    docs = await job_records(provenance, job_id)
    if not docs:
        return None
    completed = {step_key(d): d for d in docs if d.get("kind") == "step.completed"}
    failed = {step_key(d): d for d in docs if d.get("kind") == "step.failed"}
    pending = {step_key(d) for d in docs if d.get("kind") == "step.started"} | set(failed)
    steps = [await verify_step(doc, objects, imageproc, credentials)
             for doc in completed.values()]
    for key in sorted(pending - set(completed)):
        message = "the step started but no completion is recorded"
        if key in failed:
            message = f"the step failed ({failed[key].get('reason')}): it has no output to verify"
        steps.append(StepReport(stage=key[1], pipeline=key[2], outcome=Outcome.RECORD_INCOMPLETE,
                                message=message))
    if not steps:
        steps.append(StepReport(stage="", pipeline="", outcome=Outcome.RECORD_INCOMPLETE,
                                message="no processing step of this job is recorded yet"))
    return JobReport(job_id=job_id, outcome=job_outcome(steps), steps=steps)
