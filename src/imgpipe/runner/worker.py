"""The runner's work: one image event in, one output per pipeline out.

For each pipeline of an event imageproc processes the input and the output is
stored under a key derived from job, stage and pipeline; then the runner
publishes provenance and a ``processed`` event. When the store hands out
presigned URLs (S3), the runner sends imageproc a GET for the input and a PUT
for the output key and handles only small messages (the *object path*);
otherwise (the embedded store of ``imgpipe dev``) it fetches the input, posts
its bytes to imageproc and stores what comes back (the *bytes path*). Both
paths write the same key with the same bytes and publish the same records. The message
is acked only after all of that (the broker adapter acks when the handler
returns), so a crash at any point means a redelivery that rewrites the same
key and the same provenance document ids.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from imgpipe import __version__
from imgpipe.broker.protocol import Broker, Delivery
from imgpipe.client.imageproc import ImageprocClient, Processed
from imgpipe.domain.events import (
    ImageEvent,
    ObjectRef,
    ProvenanceEvent,
    SoftwareAgent,
    StageRecord,
    provenance_event_id,
    stable_id,
    utcnow,
)
from imgpipe.domain.keys import object_key, safe_extension
from imgpipe.domain.pipeline import Pipeline, PipelineError, parse_pipeline
from imgpipe.errors import ImgpipeError, PermanentError, TransientError, Unavailable
from imgpipe.runner import metrics
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.logs import job_context, redact
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
PRESIGN_MARGIN = 60


def output_key(job_id: str, stage: str, pipeline: str, extension: str, source: str = "") -> str:
    """Where a job's output for one stage, pipeline and input lives: the same on every retry."""
    key = stable_id(pipeline, source) if source else stable_id(pipeline)
    return object_key("jobs", job_id, stage, f"{key[:16]}.{safe_extension(extension)}")


@dataclass
class Runner:
    settings: RunnerSettings
    broker: Broker
    store: ObjectStore
    imageproc: ImageprocClient

    @property
    def stage(self) -> str:
        return self.settings.stage

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery; raising decides between retry and dead-letter."""
        try:
            event = ImageEvent.model_validate_json(delivery.body)
        except ValidationError as exc:
            raise PermanentError(f"not an imgpipe image event: {exc.error_count()} errors",
                                 reason="invalid_message") from exc
        pipelines = (self.settings.runner_pipeline,) if self.settings.runner_pipeline else event.pipelines
        with job_context(event.job_id):
            if delivery.redelivered:
                log.info("event delivered again", extra={"attempt": delivery.attempt})
            for pipeline in pipelines:
                try:
                    await self._process(event, pipeline, delivery.attempt)
                except (Unavailable, PermanentError):
                    raise  # held until the backend is back / failed and dead-lettered
                except Exception as exc:  # transient: retried, or on the last attempt, failed
                    error = exc if isinstance(exc, ImgpipeError) else TransientError(
                        f"unexpected {type(exc).__name__} while processing", reason="internal_error")
                    if not delivery.final:
                        metrics.JOBS.labels(outcome="retried").inc()
                        raise
                    await self._failed(event, pipeline, None, error, delivery.attempt)
                    raise PermanentError(error.message, reason=error.reason) from exc

    async def _provenance(self, event: ProvenanceEvent) -> None:
        await self.broker.publish(
            self.settings.amqp_exchange_prov, event.to_bytes(),
            message_id=event.event_id, routing_key=event.kind,
        )

    def _agents(self, result: Processed | None = None) -> tuple[SoftwareAgent, ...]:
        """The software that acted: this runner and, once it answered, imageproc's."""
        agents = [SoftwareAgent(name="imgpipe-runner", version=__version__, instance=INSTANCE)]
        if result is not None:
            for name, version in (("imgpipe-imageproc", result.imageproc_version),
                                  ("libvips", result.vips_version),
                                  ("pyvips", result.pyvips_version)):
                if version:
                    agents.append(SoftwareAgent(name=name, version=version,
                                                instance=self.imageproc.instance))
        return tuple(agents)

    async def _process(self, event: ImageEvent, pipeline: str, attempt: int = 1) -> None:
        started_at = utcnow()
        clock = time.perf_counter()
        base = {"job_id": event.job_id, "stage": self.stage, "pipeline": pipeline,
                "input": event.image, "filename": event.filename, "history": event.history,
                "attempt": attempt}
        await self._provenance(ProvenanceEvent(
            event_id=provenance_event_id(event.job_id, self.stage, "step.started", pipeline,
                                         event.image.sha256),
            kind="step.started", started_at=started_at, agents=self._agents(), **base,
        ))
        try:
            moved = await self._via_objects(event, pipeline)
            if moved is None:
                data = await self.store.get_bytes(event.image.bucket, event.image.key)
                if hashlib.sha256(data).hexdigest() != event.image.sha256:
                    raise PermanentError(
                        f"the stored input {event.image.uri} no longer matches its sha256",
                        reason="input_changed",
                    )
                result = await self.imageproc.process(
                    data, pipeline, job_id=event.job_id, stage=self.stage,
                    input_sha256=event.image.sha256, filename=event.filename)
        except ObjectNotFound as exc:
            missing = PermanentError(exc.message, reason="input_missing")
            await self._failed(event, pipeline, started_at, missing, attempt)
            raise missing from exc
        except PermanentError as exc:
            await self._failed(event, pipeline, started_at, exc, attempt)
            raise
        if moved is None:
            output = await self._store_output(event, pipeline, result)
        else:
            result, output = moved
        ended_at = utcnow()
        await self._provenance(ProvenanceEvent(
            event_id=provenance_event_id(event.job_id, self.stage, "step.completed", pipeline,
                                         event.image.sha256),
            kind="step.completed", started_at=started_at, ended_at=ended_at,
            output=output, agents=self._agents(result),
            **(base | {"input": event.image.model_copy(update={
                "width": result.input_width, "height": result.input_height,
                "format": event.image.format or result.input_format})}),
        ))
        processed = ImageEvent(
            event_id=stable_id(event.job_id, self.stage, pipeline, event.image.sha256, "processed"),
            kind="processed", job_id=event.job_id, stage=self.stage, image=output,
            pipelines=(pipeline,), filename=event.filename,
            history=event.history + (StageRecord(stage=event.stage, pipeline=pipeline,
                                                 job_id=event.job_id, sha256=event.image.sha256),),
        )
        await self.broker.publish(
            self.settings.amqp_exchange_publish, processed.to_bytes(),
            message_id=processed.event_id, routing_key="processed", mandatory=False,
        )
        metrics.JOBS.labels(outcome="done").inc()
        metrics.DURATION.observe(time.perf_counter() - clock)
        log.info("image processed", extra={"pipeline": pipeline, "output": output.uri,
                                           "sha256": output.sha256,
                                           "path": "bytes" if moved is None else "object"})

    def _metadata(self, event: ImageEvent) -> dict[str, str]:
        return {"job-id": event.job_id, "stage": self.stage, "input-sha256": event.image.sha256}

    def _planned(self, pipeline: str) -> Pipeline | None:
        """The pipeline as imageproc will run it, or ``None`` when only imageproc can tell
        (a preset this runner does not know, or text that does not parse)."""
        return self._plans(pipeline)

    @functools.cached_property
    def _plans(self) -> Callable[[str], Pipeline | None]:
        presets = self.settings.preset_pipelines()

        @functools.lru_cache(maxsize=256)  # the same few pipelines, job after job
        def plan(text: str) -> Pipeline | None:
            try:
                return parse_pipeline(text, presets)
            except PipelineError:
                return None

        return plan

    async def _via_objects(self, event: ImageEvent, pipeline: str
                           ) -> tuple[Processed, ObjectRef] | None:
        """The object path: imageproc reads and writes S3 through presigned URLs.

        ``None`` when the store cannot presign, the output key cannot be known before
        processing, or ``RUNNER_DATA_PATH=bytes``: the caller takes the bytes path.
        """
        planned = self._planned(pipeline) if self.settings.runner_data_path == "auto" else None
        if planned is None:
            return None
        bucket = self.settings.s3_output_bucket
        key = output_key(event.job_id, self.stage, planned.canonical(), planned.output_format,
                         event.image.sha256)
        # imageproc starts no PUT once this runner stopped waiting (output.within_s); the
        # URLs outlive that by a margin for clock skew and second-granular signatures
        expires = math.ceil(self.settings.imageproc_client_timeout) + PRESIGN_MARGIN
        source = await self.store.presign_get(event.image.bucket, event.image.key,
                                              expires=expires)
        target = await self.store.presign_put(bucket, key, content_type=planned.media_type,
                                              metadata=self._metadata(event), expires=expires)
        if source is None or target is None:
            return None
        result = await self.imageproc.process_object(
            pipeline, input_url=source, input_sha256=event.image.sha256,
            input_size=event.image.size, output_url=target.url, output_headers=target.headers,
            job_id=event.job_id, stage=self.stage, filename=event.filename)
        if (result.pipeline, result.format) != (planned.canonical(), planned.output_format):
            raise PermanentError(
                f"imageproc ran {result.pipeline!r} ({result.format}), not "
                f"{planned.canonical()!r} as this runner resolved {pipeline!r}: "
                "give both the same IMGPIPE_PRESETS", reason="pipeline_mismatch")
        return result, self._output_ref(bucket, key, result.sha256, result.size, result)

    async def _store_output(self, event: ImageEvent, pipeline: str, result: Processed) -> ObjectRef:
        key = output_key(event.job_id, self.stage, result.pipeline, result.format or "bin",
                         event.image.sha256)
        stored = await self.store.put_bytes(
            self.settings.s3_output_bucket, key, result.body, content_type=result.media_type,
            metadata=self._metadata(event),
        )
        return self._output_ref(stored.bucket, stored.key, stored.sha256, stored.size, result)

    @staticmethod
    def _output_ref(bucket: str, key: str, sha256: str, size: int,
                    result: Processed) -> ObjectRef:
        return ObjectRef(
            bucket=bucket, key=key, sha256=sha256, size=size,
            media_type=result.media_type, format=result.format,
            width=result.width, height=result.height,
            payload_sha256=result.payload_sha256 if result.signed else None,
        )

    async def _failed(self, event: ImageEvent, pipeline: str, started_at: object,
                      error: ImgpipeError, attempt: int = 1) -> None:
        metrics.JOBS.labels(outcome="failed").inc()
        message = redact(error.message)
        log.warning("image failed: %s", message, extra={"reason": error.reason})
        await self._provenance(ProvenanceEvent(
            event_id=provenance_event_id(event.job_id, self.stage, "step.failed", pipeline,
                                         event.image.sha256),
            kind="step.failed", job_id=event.job_id, stage=self.stage, pipeline=pipeline,
            input=event.image, filename=event.filename, history=event.history,
            ended_at=utcnow(), reason=error.reason, message=message,
            agents=self._agents(), attempt=attempt,
        ))
