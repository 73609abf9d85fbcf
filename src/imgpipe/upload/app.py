"""The upload service's HTTP API: uploads in, job status and results out."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from aiohttp import web

from imgpipe import __version__
from imgpipe.broker.protocol import Broker
from imgpipe.domain.events import (
    ImageEvent,
    ObjectRef,
    ProvenanceEvent,
    SoftwareAgent,
    provenance_event_id,
)
from imgpipe.domain.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import UploadSettings
from imgpipe.runtime.http import add_ops_routes, errors_middleware, metrics_middleware
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore
from imgpipe.upload import metrics
from imgpipe.upload.auth import auth_middleware
from imgpipe.upload.intake import Intake, ReceivedFile, discard, read_upload
from imgpipe.upload.jobs import job_status
from imgpipe.upload.provenance_routes import add_provenance_routes
from imgpipe.upload.web import add_web_routes

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Backends:
    broker: Broker
    store: ObjectStore
    provenance: ProvenanceStore


SETTINGS: web.AppKey[UploadSettings] = web.AppKey("settings", UploadSettings)
BACKENDS: web.AppKey[Backends] = web.AppKey("backends", Backends)


class JobNotFound(ImgpipeError):
    reason = "job_not_found"
    status = 404


def _pipelines(request: web.Request, intake: Intake, default: str) -> tuple[str, ...]:
    specs = list(request.query.getall("pipeline", [])) + intake.fields.get("pipeline", [])
    specs = [s for s in (s.strip() for s in specs) if s] or [default or DEFAULT_PIPELINE]
    canonical: list[str] = []
    for spec in specs:
        text = parse_pipeline(spec).canonical()
        if text not in canonical:
            canonical.append(text)
    return tuple(canonical)


async def _announce(
    request: web.Request, received: ReceivedFile, pipelines: tuple[str, ...]
) -> None:
    settings = request.app[SETTINGS]
    broker = request.app[BACKENDS].broker
    image = ObjectRef(
        bucket=received.stored.bucket,
        key=received.stored.key,
        sha256=received.stored.sha256,
        size=received.stored.size,
        media_type=received.media_type,
        format=received.format,
    )
    event = ImageEvent(
        kind="uploaded",
        job_id=received.job_id,
        stage="upload",
        image=image,
        pipelines=pipelines,
        filename=received.filename,
    )
    await broker.publish(
        settings.amqp_exchange_subscribe, event.to_bytes(), message_id=event.event_id,
        routing_key="uploaded",
    )
    received_event = ProvenanceEvent(
        event_id=provenance_event_id(received.job_id, "upload", "job.received"),
        kind="job.received",
        job_id=received.job_id,
        stage="upload",
        input=image,
        output=image,
        pipelines=pipelines,
        filename=received.filename,
        client=request.remote,
        agents=(SoftwareAgent(name="imgpipe-upload", version=__version__),),
    )
    try:
        await broker.publish(
            settings.amqp_exchange_prov, received_event.to_bytes(),
            message_id=received_event.event_id, routing_key="job.received",
        )
    except ImgpipeError:
        log.warning("job accepted but its 'received' record was not published",
                    extra={"job_id": received.job_id})


async def post_upload(request: web.Request) -> web.Response:
    """Stream the files to S3, queue one job per file, answer 202."""
    settings = request.app[SETTINGS]
    backends = request.app[BACKENDS]
    bucket = settings.s3_input_bucket
    for spec in request.query.getall("pipeline", []):
        parse_pipeline(spec)  # refuse a bad pipeline before reading any bytes
    await backends.broker.check()  # 503 before storing bytes that could not be queued
    intake = await read_upload(
        request, backends.store, bucket,
        max_bytes=settings.upload_max_bytes, max_files=settings.upload_max_files,
        read_timeout=settings.upload_read_timeout,
    )
    announced = 0
    pipelines: tuple[str, ...] = ()
    try:
        if not intake.files:
            raise InvalidInput(
                "No image received: send one or more form parts named 'file'.",
                reason="missing_file",
            )
        pipelines = _pipelines(request, intake, settings.upload_default_pipeline)
        for received in intake.files:
            await _announce(request, received, pipelines)
            announced += 1
    except BaseException as exc:
        queued, intake.files = intake.files[:announced], intake.files[announced:]
        await discard(backends.store, bucket, intake)
        if queued and isinstance(exc, ImgpipeError):
            # Files before the failure are queued and will be processed: say which,
            # so the client retries only the rest.
            exc.details["queued_jobs"] = [_queued(r, pipelines) for r in queued]
        raise
    return web.json_response(
        {"jobs": [_queued(received, pipelines) for received in intake.files]}, status=202
    )


def _queued(received: ReceivedFile, pipelines: tuple[str, ...]) -> dict[str, object]:
    """The answer for one queued file (counted and logged once, here)."""
    metrics.UPLOADS.labels(format=received.format).inc()
    metrics.UPLOAD_BYTES.inc(received.stored.size)
    log.info("job queued", extra={"job_id": received.job_id, "bytes": received.stored.size,
                                  "sha256": received.stored.sha256})
    return {
        "job_id": received.job_id,
        "status": "queued",
        "status_url": f"/jobs/{received.job_id}",
        "filename": received.filename,
        "sha256": received.stored.sha256,
        "size": received.stored.size,
        "format": received.format,
        "pipelines": list(pipelines),
    }


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not JOB_ID.match(job_id):
        raise JobNotFound(f"There is no job '{job_id[:64]}': job ids are 32 hexadecimal digits.")
    return job_id


async def get_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    backends = request.app[BACKENDS]
    view = await job_status(request.app[SETTINGS], backends.store, backends.provenance, job_id)
    if view is None:
        raise JobNotFound(f"There is no job {job_id}.")
    return web.json_response(view)


async def get_output(request: web.Request) -> web.StreamResponse:
    """Stream one of a job's outputs from the output bucket."""
    job_id = _job_id(request)
    backends = request.app[BACKENDS]
    view = await job_status(request.app[SETTINGS], backends.store, backends.provenance, job_id)
    if view is None:
        raise JobNotFound(f"There is no job {job_id}.")
    try:
        index = int(request.match_info["index"])
        output = view["outputs"][index]
    except (ValueError, IndexError):
        raise ImgpipeError(
            f"Job {job_id} has no output {request.match_info['index']!r} "
            f"(it has {len(view['outputs'])}).", reason="output_not_found", status=404,
        ) from None
    bucket, key = output["location"].removeprefix("s3://").split("/", 1)
    chunks = backends.store.iter_bytes(bucket, key)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except ObjectNotFound:
        raise ImgpipeError(f"The output of job {job_id} is no longer stored.",
                           reason="output_missing", status=410) from None
    response = web.StreamResponse(headers={
        "Content-Type": output.get("media_type") or "application/octet-stream",
        "Content-Length": str(output.get("size") or 0),
        "X-Imgpipe-Sha256": output.get("sha256") or "",
        "Content-Disposition": f'inline; filename="{job_id}-{index}.{output.get("format") or "bin"}"',
    })
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def create_app(settings: UploadSettings, backends: Backends) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, errors_middleware, auth_middleware(settings.api_tokens())],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[BACKENDS] = backends
    app.router.add_post("/upload", post_upload)
    app.router.add_get("/jobs/{job_id}", get_job)
    app.router.add_get("/jobs/{job_id}/outputs/{index}", get_output)
    add_provenance_routes(app, settings, backends.provenance, backends.store)
    add_web_routes(app, settings, backends)
    add_ops_routes(app, {
        "rabbitmq": backends.broker.check,
        "s3": backends.store.check,
        "couchdb": backends.provenance.check,
    })
    return app
