"""The imageproc HTTP service: ``POST /process`` (bytes in and out), ``POST /process-object``
(presigned S3 URLs in, JSON out), catalogue, presets and ops routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from imgpipe import __version__
from imgpipe.credentials.signing import signer_from
from imgpipe.domain.pipeline import (
    BUILTIN_PRESETS,
    DEFAULT_PIPELINE,
    catalogue,
    parse_pipeline,
)
from imgpipe.errors import ImgpipeError, InvalidInput, TransientError
from imgpipe.imageproc import metrics
from imgpipe.imageproc.credentials import StepOrigin
from imgpipe.imageproc.engine import pyvips_version, vips_version
from imgpipe.imageproc.errors import TooLarge
from imgpipe.imageproc.malloc import limit_arenas
from imgpipe.imageproc.objects import HTTP, answer, fetch_input, parse_request, store_output
from imgpipe.imageproc.overlay import load_overlays
from imgpipe.imageproc.safety import LOADERS, Limits, configure_vips
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.imageproc.workers import WorkerPool
from imgpipe.runtime.http import add_ops_routes, errors_middleware, json_error
from imgpipe.runtime.service import Listening, serve_app

log = logging.getLogger(__name__)

POOL: web.AppKey[WorkerPool] = web.AppKey("pool", WorkerPool)
PRESETS: web.AppKey[dict[str, str]] = web.AppKey("presets", dict)
SETTINGS: web.AppKey[ImageprocSettings] = web.AppKey("settings", ImageprocSettings)
DRAINING: web.AppKey[list[bool]] = web.AppKey("draining", list)
HEX = frozenset("0123456789abcdef")


def limits_from(settings: ImageprocSettings) -> Limits:
    """The engine limits a service with these settings enforces."""
    formats = frozenset(f.strip() for f in settings.imageproc_formats.split(",") if f.strip())
    return Limits(
        max_bytes=settings.imageproc_max_bytes,
        max_pixels=settings.imageproc_max_pixels,
        max_frames=settings.imageproc_max_frames,
        max_output_dimension=settings.imageproc_max_output_dimension,
        formats=formats,
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"input has {request.content_length} bytes, at most {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():  # as received: no re-slicing
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"input has more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)  # the one copy (a growing bytearray copied each byte ~3 times)


def _refusal(err: ImgpipeError) -> web.Response:
    metrics.REQUESTS.labels(err.reason).inc()
    retry = err.details.get("retry_after")
    return json_error(err, headers={"Retry-After": str(retry)} if retry else None)


async def process_image(request: web.Request) -> web.StreamResponse:
    """``POST /process?pipeline=...``: the body's image through the pipeline."""
    try:
        if request.app[DRAINING][0]:
            raise TransientError("imageproc is shutting down", reason="shutting_down")
        spec = request.query.get("pipeline") or request.headers.get("X-Imgpipe-Pipeline")
        pipeline = parse_pipeline(spec or DEFAULT_PIPELINE, request.app[PRESETS])
        pool = request.app[POOL]
        pool.check_capacity()
        data = await _read_body(request, pool.limits.max_bytes)
        result = await pool.run(data, pipeline, _origin(request))
    except ImgpipeError as err:
        return _refusal(err)
    metrics.REQUESTS.labels("ok").inc()
    metrics.INPUT_BYTES.inc(len(data))
    metrics.OUTPUT_BYTES.inc(len(result.data))
    sha256 = result.sha256  # one pass over the output (a property: not read twice)
    headers = {
        "Content-Type": pipeline.media_type,
        "X-Imgpipe-Format": result.format,
        "X-Imgpipe-Width": str(result.width),
        "X-Imgpipe-Height": str(result.height),
        "X-Imgpipe-Sha256": sha256,
        "X-Imgpipe-Payload-Sha256": result.payload_sha256 or sha256,
        "X-Imgpipe-Pipeline": pipeline.canonical(),
        "X-Imgpipe-Vips-Version": vips_version(),
        "X-Imgpipe-Pyvips-Version": pyvips_version(),
        "X-Imgpipe-Version": __version__,
        "X-Imgpipe-Input-Format": result.input.format,
        "X-Imgpipe-Input-Width": str(result.input.width),
        "X-Imgpipe-Input-Height": str(result.input.height),
    }
    if result.payload_sha256 is not None:
        headers["X-Imgpipe-Credentials"] = "c2pa"
    return web.Response(body=result.data, headers=headers)


async def process_object(request: web.Request) -> web.StreamResponse:
    """``POST /process-object``: input from a presigned GET, output to a presigned PUT
    (:mod:`imgpipe.imageproc.objects`); answers JSON about the output, not its bytes."""
    try:
        arrived = time.monotonic()
        if request.app[DRAINING][0]:
            raise TransientError("imageproc is shutting down", reason="shutting_down")
        message = parse_request(await _read_body(request, 64 * 1024))
        pipeline = parse_pipeline(message.pipeline or DEFAULT_PIPELINE, request.app[PRESETS])
        pool = request.app[POOL]
        pool.check_capacity()
        # verified: fetch_input refuses bytes of another sha256, so signing need not rehash
        origin = replace(_origin(request), input_sha256=message.input.sha256,
                         input_verified=True)
        http = request.app[HTTP]
        started = time.perf_counter()
        data = await fetch_input(http, message.input, pool.limits.max_bytes)
        fetched = time.perf_counter()
        result = await pool.run(data, pipeline, origin)
        processed = time.perf_counter()
        await store_output(http, message.output, result.data, arrived)
        stored = time.perf_counter()
    except ImgpipeError as err:
        return _refusal(err)
    metrics.REQUESTS.labels("ok").inc()
    metrics.INPUT_BYTES.inc(len(data))
    return answer(result, pipeline.canonical(), pipeline.media_type,
                  {"fetch_s": fetched - started, "process_s": processed - fetched,
                   "store_s": stored - processed})


def _origin(request: web.Request) -> StepOrigin:
    """The step the caller names in ``X-Imgpipe-Job``/``-Stage``/``-Input-Sha256``/``-Filename``."""
    h = request.headers
    claimed = h.get("X-Imgpipe-Input-Sha256", "").strip().lower() or None
    if claimed is not None and not (len(claimed) == 64 and all(c in HEX for c in claimed)):
        raise InvalidInput("X-Imgpipe-Input-Sha256: expected 64 hex digits",
                           reason="invalid_header")
    return StepOrigin(job_id=h.get("X-Imgpipe-Job") or None,
                      stage=h.get("X-Imgpipe-Stage") or None,
                      input_sha256=claimed,
                      filename=unquote(h["X-Imgpipe-Filename"]) if h.get("X-Imgpipe-Filename")
                      else None)


async def operations(request: web.Request) -> web.Response:
    """``GET /operations``: every operation with its parameters (from the models)."""
    return web.json_response({"operations": catalogue()})


async def presets(request: web.Request) -> web.Response:
    """``GET /presets``: every preset name with its canonical pipeline."""
    table: dict[str, str] = dict(BUILTIN_PRESETS)
    user: dict[str, str] = request.app[PRESETS]
    table.update(user)
    body = {name: parse_pipeline(spec).canonical() for name, spec in sorted(table.items())}
    return web.json_response({"default": DEFAULT_PIPELINE, "presets": body})


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = WorkerPool(
        settings.imageproc_workers,
        settings.imageproc_queue,
        limits_from(settings),
        settings.imageproc_deadline,
        load_overlays(settings.imageproc_overlays),
        signer_from(settings),
    )
    app[POOL] = pool
    # presigned S3 URLs only: no cookies, no proxy from the environment, no redirects
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
        total=settings.imageproc_deadline, connect=3), cookie_jar=aiohttp.DummyCookieJar())
    app[HTTP] = http
    yield
    await http.close()
    pool.close()


async def _drain(app: web.Application) -> None:
    app[DRAINING][0] = True


def create_app(settings: ImageprocSettings) -> web.Application:
    """The imageproc application; sets libvips up for untrusted input first."""
    limits = limits_from(settings)
    unknown = sorted(limits.formats - set(LOADERS))
    if unknown:
        from imgpipe.errors import ConfigError

        raise ConfigError(f"IMAGEPROC_FORMATS: unknown format(s) {', '.join(unknown)}")
    configure_vips(limits.formats, settings.imageproc_vips_threads)
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    app = web.Application(middlewares=[errors_middleware])
    app[SETTINGS] = settings
    app[PRESETS] = settings.preset_pipelines()
    app[DRAINING] = [False]

    async def ready() -> None:
        if app[DRAINING][0]:
            raise RuntimeError("shutting down")

    add_ops_routes(app, {"workers": ready})
    app.router.add_post("/process", process_image)
    app.router.add_post("/process-object", process_object)
    app.router.add_get("/operations", operations)
    app.router.add_get("/presets", presets)
    app.cleanup_ctx.append(_pool_ctx)
    app.on_shutdown.append(_drain)
    return app


async def run_imageproc(settings: ImageprocSettings, *, stop: asyncio.Event | None = None,
                        listening: Listening | None = None) -> None:
    """Serve imageproc until ``stop`` (or SIGTERM/SIGINT); in-flight requests finish first."""
    limit_arenas()
    await serve_app("imageproc", settings, create_app(settings), settings.imageproc_host,
                    settings.imageproc_port, stop=stop, listening=listening)
