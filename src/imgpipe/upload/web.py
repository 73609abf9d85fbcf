"""The page at ``/`` and the small API it uses beside the job API.

* ``GET /`` and ``/static/...``: the page (plain HTML, CSS and JS shipped in the package);
* ``GET /presets``: the named pipelines a user can pick;
* ``GET|POST /pipelines/validate``: a pipeline's canonical form, or the refusal (400);
* ``GET /jobs?ids=...``: several jobs' status in one request (the page polls it);
* ``GET /jobs/{job_id}/input``: the uploaded image, for side-by-side previews;
* ``GET /openapi.json`` and ``GET /api``: the API description, as data and as a page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from imgpipe.domain.pipeline import BUILTIN_PRESETS, DEFAULT_PIPELINE, parse_pipeline
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.runtime.config import UploadSettings
from imgpipe.storage.protocol import ObjectNotFound
from imgpipe.upload.apidoc import render_api_page
from imgpipe.upload.intake import input_key
from imgpipe.upload.jobs import job_status
from imgpipe.upload.openapi import openapi_document

if TYPE_CHECKING:
    from imgpipe.upload.app import Backends

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
MAX_IDS = 100
LIST_CONCURRENCY = 8
JOB_ID_LENGTH = 32
HEX = frozenset("0123456789abcdef")


class WebContext:
    """What the page's handlers need: settings, backends and the preset table."""

    def __init__(
        self, settings: UploadSettings, backends: Backends, presets: Mapping[str, str] | None
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.presets = {**BUILTIN_PRESETS, **(presets or {})}

    async def job(self, job_id: str) -> dict[str, Any] | None:
        return await job_status(
            self.settings, self.backends.store, self.backends.provenance, job_id
        )


WEB: web.AppKey[WebContext] = web.AppKey("web", WebContext)


def _is_job_id(text: str) -> bool:
    return len(text) == JOB_ID_LENGTH and set(text) <= HEX


async def index(request: web.Request) -> web.FileResponse:
    """The page: upload images, follow their jobs, see results and provenance."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={
        "Cache-Control": "no-cache",
        "Content-Security-Policy": PAGE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    })


async def get_presets(request: web.Request) -> web.Response:
    ctx = request.app[WEB]
    presets = [
        {"name": name, "pipeline": parse_pipeline(spec).canonical()}
        for name, spec in sorted(ctx.presets.items())
    ]
    default = ctx.settings.upload_default_pipeline or DEFAULT_PIPELINE
    return web.json_response({"default": default, "presets": presets})


def _validated(ctx: WebContext, spec: Any) -> dict[str, Any]:
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise InvalidInput(
            "Give a pipeline to check: ?pipeline=TEXT or a JSON body {\"pipeline\": ...}.",
            reason="missing_pipeline",
        )
    pipeline = parse_pipeline(spec, ctx.presets)
    preset = spec.strip() if isinstance(spec, str) and spec.strip() in ctx.presets else None
    return {
        "valid": True,
        "canonical": pipeline.canonical(),
        "steps": pipeline.to_json(),
        "format": pipeline.output_format,
        "media_type": pipeline.media_type,
        "preset": preset,
    }


async def validate_pipeline(request: web.Request) -> web.Response:
    """Check a pipeline: 200 with its canonical form, or 400 with the reason."""
    ctx = request.app[WEB]
    if request.method == "POST":
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput(
                "Send a JSON object such as {\"pipeline\": \"resize:w=256/format:png\"}.",
                reason="invalid_json",
            ) from None
        spec = body.get("pipeline") if isinstance(body, dict) else None
    else:
        spec = request.query.get("pipeline")
    return web.json_response(_validated(ctx, spec))


def _requested_ids(request: web.Request) -> list[str]:
    ids: list[str] = []
    for value in request.query.getall("ids", []):
        for item in value.split(","):
            item = item.strip().lower()
            if item and item not in ids:
                ids.append(item)
    if not ids:
        raise InvalidInput("Name the jobs: /jobs?ids=ID1,ID2 (up to 100).", reason="missing_ids")
    if len(ids) > MAX_IDS:
        raise InvalidInput(f"At most {MAX_IDS} job ids per request.", reason="too_many_ids")
    bad = [i for i in ids if not _is_job_id(i)]
    if bad:
        raise InvalidInput(
            f"Not a job id: {bad[0][:64]!r} (job ids are 32 hexadecimal digits).",
            reason="invalid_job_id",
        )
    return ids


async def list_jobs(request: web.Request) -> web.Response:
    """Several jobs at once, in the order asked; unknown ids are listed as missing."""
    ctx = request.app[WEB]
    ids = _requested_ids(request)
    limit = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(job_id: str) -> dict[str, Any] | None:
        async with limit:
            return await ctx.job(job_id)

    views = await asyncio.gather(*(one(i) for i in ids))
    return web.json_response({
        "jobs": [v for v in views if v is not None],
        "missing": [i for i, v in zip(ids, views, strict=True) if v is None],
    })


async def get_input(request: web.Request) -> web.StreamResponse:
    """Stream a job's uploaded image from the input bucket."""
    ctx = request.app[WEB]
    job_id = request.match_info["job_id"]
    if not _is_job_id(job_id):
        raise ImgpipeError(
            f"There is no job '{job_id[:64]}': job ids are 32 hexadecimal digits.",
            reason="job_not_found", status=404,
        )
    bucket, key = ctx.settings.s3_input_bucket, input_key(job_id)
    store = ctx.backends.store
    info = await store.head(bucket, key)
    if info is None:
        raise ImgpipeError(f"There is no input for job {job_id}.", reason="input_not_found",
                           status=404)
    chunks = store.iter_bytes(bucket, key)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except ObjectNotFound:
        raise ImgpipeError(f"There is no input for job {job_id}.", reason="input_not_found",
                           status=404) from None
    response = web.StreamResponse(headers={
        "Content-Type": info.content_type,
        "Content-Length": str(info.size),
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    })
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """Every (METHOD, path template) ``app`` answers, HEAD left out."""
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path = path.rstrip("/") + "/{path}"
        routes.add((route.method, path))
    return routes


async def get_openapi(request: web.Request) -> web.Response:
    doc = openapi_document(served_routes(request.app))
    return web.json_response(doc, dumps=lambda v: json.dumps(v, indent=1))


async def get_api_page(request: web.Request) -> web.Response:
    page = render_api_page(openapi_document(served_routes(request.app)))
    return web.Response(text=page, content_type="text/html")


async def static_file(request: web.Request) -> web.FileResponse:
    """A file of the page; anything else is a JSON 404 like every other refusal."""
    root = STATIC_DIR.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ImgpipeError("There is no such file.", reason="not_found", status=404)
    return web.FileResponse(path)


def add_web_routes(
    app: web.Application,
    settings: UploadSettings,
    backends: Backends,
    presets: Mapping[str, str] | None = None,
) -> None:
    """Serve the page, the presets, pipeline validation, job lists and the API description."""
    app[WEB] = WebContext(settings, backends, presets)
    app.router.add_get("/", index)
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_get("/presets", get_presets)
    app.router.add_get("/pipelines/validate", validate_pipeline)
    app.router.add_post("/pipelines/validate", validate_pipeline)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_get("/jobs/{job_id}/input", get_input)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/api", get_api_page)
