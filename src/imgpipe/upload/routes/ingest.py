"""``POST /ingest``: jobs for images already in an allowed bucket, progress streamed back.

The request names ``source`` (``s3://bucket/prefix``, the bucket one of
``UPLOAD_INGEST_BUCKETS``) and the pipelines; the answer is
``application/x-ndjson``, one progress object per line about twice a second
and a last one with ``done: true`` (or ``error``). A client that goes away
stops the run; the same request later resumes it (``restart: true`` lists
from the beginning, still skipping what was ingested).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from imgpipe.domain.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.ingest.ledger import Ledger
from imgpipe.ingest.run import Exchanges, IngestRun
from imgpipe.ingest.source import allowed_source
from imgpipe.upload.auth import principal_of
from imgpipe.upload.context import UploadContext, context_of

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


async def _request(request: web.Request, ctx: UploadContext) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        raise InvalidInput('Send a JSON object such as {"source": "s3://bucket/prefix", '
                           '"pipelines": ["thumbnail"]}.', reason="invalid_json")
    return body


def _pipelines(body: dict[str, Any], ctx: UploadContext) -> tuple[str, ...]:
    given = body.get("pipelines") or [ctx.settings.upload_default_pipeline or DEFAULT_PIPELINE]
    if isinstance(given, str):
        given = [given]
    most = ctx.settings.upload_max_pipelines
    if not isinstance(given, list) or len(given) > most:
        raise InvalidInput(f"'pipelines' is a list of at most {most} pipelines "
                           "(UPLOAD_MAX_PIPELINES).", reason="invalid_pipeline")
    canonical: list[str] = []
    for spec in given:
        text = parse_pipeline(spec, ctx.presets).canonical()
        if text not in canonical:
            canonical.append(text)
    return tuple(canonical)


async def _line(response: web.StreamResponse, value: dict[str, Any]) -> None:
    await response.write(json.dumps(value).encode() + b"\n")


@routes.post("/ingest")
async def post_ingest(request: web.Request) -> web.StreamResponse:
    """Ingest an allowed bucket's prefix; stream the run's progress as NDJSON."""
    ctx = context_of(request)
    settings, backends = ctx.settings, ctx.backends
    body = await _request(request, ctx)
    source = allowed_source(body["source"], settings.ingest_buckets())
    pipelines = _pipelines(body, ctx)
    await backends.broker.check()
    listing = backends.store.iter_objects(source.bucket, source.prefix)
    with contextlib.suppress(StopAsyncIteration):
        await anext(listing)  # a missing bucket is a 404 before the stream starts
    await listing.aclose()
    run = IngestRun(
        backends.store, backends.broker, Ledger(backends.store, settings.s3_input_bucket),
        Exchanges(settings.amqp_exchange_subscribe, settings.amqp_exchange_prov),
        max_bytes=settings.upload_max_bytes, parallel=settings.upload_ingest_parallel,
        owner=principal_of(request))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    log.info("ingest started", extra={"source": source.uri, "pipelines": list(pipelines)})
    try:
        async with contextlib.aclosing(run.run(source, pipelines,
                                               restart=bool(body.get("restart")))) as progress:
            async for state in progress:
                await _line(response, {**state.to_json(), "pipelines": list(pipelines)})
    except ImgpipeError as exc:
        log.warning("ingest stopped by an error", extra={"source": source.uri,
                                                         "reason": exc.reason})
        await _line(response, exc.to_dict() | {"done": False})
    except ConnectionError:
        log.info("ingest stopped: the client went away", extra={"source": source.uri})
        return response
    await response.write_eof()
    return response
