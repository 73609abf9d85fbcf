"""``POST /upload``: stream the files to the input bucket, queue one job per file, answer 202."""

from __future__ import annotations

import logging

from aiohttp import web

from imgpipe.domain.events import ObjectRef
from imgpipe.domain.newjob import new_job
from imgpipe.domain.pipeline import DEFAULT_PIPELINE
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.upload import metrics
from imgpipe.upload.auth import principal_of
from imgpipe.upload.context import UploadContext, context_of
from imgpipe.upload.intake import ReceivedFile, TooManyPipelines, discard, read_upload

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _pipelines(specs: list[str], ctx: UploadContext) -> tuple[str, ...]:
    """The distinct pipelines asked for, canonical, in the order first asked."""
    default = ctx.settings.upload_default_pipeline or DEFAULT_PIPELINE
    specs = [s for s in (s.strip() for s in specs) if s] or [default]
    return tuple(dict.fromkeys(ctx.canonical_pipeline(spec) for spec in specs))


async def _announce(
    request: web.Request, ctx: UploadContext, received: ReceivedFile, pipelines: tuple[str, ...]
) -> None:
    settings, broker = ctx.settings, ctx.backends.broker
    image = ObjectRef(
        bucket=received.stored.bucket,
        key=received.stored.key,
        sha256=received.stored.sha256,
        size=received.stored.size,
        media_type=received.media_type,
        format=received.format,
    )
    job = new_job(
        received.job_id, image, pipelines, filename=received.filename, owner=principal_of(request),
        client=request.remote if ctx.settings.upload_record_client_address else None,
    )
    await broker.publish(
        settings.amqp_exchange_subscribe, job.image_event.to_bytes(),
        message_id=job.image_event.event_id, routing_key="uploaded",
    )
    try:
        await broker.publish(
            settings.amqp_exchange_prov, job.received.to_bytes(),
            message_id=job.received.event_id, routing_key="job.received",
        )
    except ImgpipeError:
        log.warning("job accepted but its 'received' record was not published",
                    extra={"job_id": received.job_id})


@routes.post("/upload")
async def post_upload(request: web.Request) -> web.Response:
    """Stream the files to S3, queue one job per file, answer 202."""
    ctx = context_of(request)
    settings, backends = ctx.settings, ctx.backends
    bucket = settings.s3_input_bucket
    asked = request.query.getall("pipeline", [])
    if len(asked) > settings.upload_max_pipelines:
        raise TooManyPipelines(settings.upload_max_pipelines)
    for spec in asked:
        ctx.canonical_pipeline(spec)  # refuse a bad pipeline before reading any bytes
    await backends.broker.check()  # 503 before storing bytes that could not be queued
    intake = await read_upload(
        request, backends.store, bucket,
        max_bytes=settings.upload_max_bytes, max_files=settings.upload_max_files,
        max_pipelines=settings.upload_max_pipelines, pipelines_given=len(asked),
        read_timeout=settings.upload_read_timeout, owner=principal_of(request),
    )
    announced = 0
    pipelines: tuple[str, ...] = ()
    try:
        if not intake.files:
            raise InvalidInput(
                "No image received: send one or more form parts named 'file'.",
                reason="missing_file",
            )
        pipelines = _pipelines([*asked, *intake.fields.get("pipeline", [])], ctx)
        for received in intake.files:
            await _announce(request, ctx, received, pipelines)
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
