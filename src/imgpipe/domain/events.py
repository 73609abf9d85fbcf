"""Wire models: the events imgpipe's services exchange over RabbitMQ.

Every event is JSON with a ``schema`` field naming its kind and version, so a
consumer can refuse what it does not understand instead of guessing.
Identifiers are deterministic where a redelivery must not create a second
effect: provenance event ids derive from job, stage, pipeline and kind.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IMAGE_EVENT_SCHEMA = "imgpipe.image-event/1"
#: Most pipelines one image event may carry (UPLOAD_MAX_PIPELINES cannot go beyond it).
MAX_PIPELINES = 64
PROVENANCE_EVENT_SCHEMA = "imgpipe.provenance-event/1"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh random identifier (job ids, event ids of new facts)."""
    return uuid.uuid4().hex


def stable_id(*parts: str) -> str:
    """A deterministic identifier: equal parts give equal ids, always."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ObjectRef(_Model):
    """An image stored in S3, with what is known of its content."""

    bucket: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    media_type: str
    format: str | None = None
    width: int | None = None
    height: int | None = None
    payload_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """For an output with Content Credentials: the sha256 of the image as libvips encoded
    it, before the signed manifest was inserted (what re-running the step reproduces)."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class StageRecord(_Model):
    """One stage an image passed through before reaching the current one."""

    stage: str
    pipeline: str
    job_id: str
    sha256: str


class ImageEvent(_Model):
    """An image is ready for the next stage.

    Published by the upload service (``kind="uploaded"``, on
    ``AMQP_EXCHANGE_SUBSCRIBE``) and by each runner (``kind="processed"``,
    on its ``AMQP_EXCHANGE_PUBLISH``), so stages chain: a runner's output
    event is the next runner's input event.
    """

    schema_: Literal["imgpipe.image-event/1"] = Field(default="imgpipe.image-event/1", alias="schema")
    event_id: str = Field(default_factory=new_id)
    kind: Literal["uploaded", "processed"]
    job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    stage: str
    image: ObjectRef
    pipelines: tuple[str, ...] = Field(min_length=1, max_length=MAX_PIPELINES)
    filename: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    history: tuple[StageRecord, ...] = ()
    attempt: int = Field(default=1, ge=1)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


ProvenanceKind = Literal["job.received", "step.started", "step.completed", "step.failed"]


class SoftwareAgent(_Model):
    """The software that acted: name, version and the instance that ran it."""

    name: str
    version: str
    instance: str | None = None


class ProvenanceEvent(_Model):
    """A fact for the provenance record of a job.

    ``event_id`` is deterministic (see :func:`provenance_event_id`): the
    provenance store uses it as document id, so a redelivered event is stored
    once.
    """

    schema_: Literal["imgpipe.provenance-event/1"] = Field(
        default="imgpipe.provenance-event/1", alias="schema"
    )
    event_id: str
    kind: ProvenanceKind
    job_id: str
    stage: str
    time: datetime = Field(default_factory=utcnow)
    pipeline: str | None = None
    pipelines: tuple[str, ...] = ()
    input: ObjectRef | None = None
    output: ObjectRef | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempt: int = 1
    agents: tuple[SoftwareAgent, ...] = ()
    filename: str | None = None
    client: str | None = None
    owner: str | None = None
    reason: str | None = None
    message: str | None = None
    history: tuple[StageRecord, ...] = ()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def provenance_event_id(
    job_id: str, stage: str, kind: ProvenanceKind, pipeline: str = "", source: str = ""
) -> str:
    """The document id of a provenance fact: one per job, stage, pipeline, input and kind.

    ``source`` (the input's sha256) tells apart the steps of a stage that runs
    one pipeline over several images of a job: a chained stage after a stage
    that ran several pipelines.
    """
    key = stable_id(pipeline, source) if source else stable_id(pipeline)
    return f"{job_id}-{stage}-{kind}-{key[:12]}"
