"""The page at ``/`` and what it uses beside the job API.

* ``GET /`` and ``/static/...``: the page (plain HTML, CSS and JS shipped in the package);
* ``GET /favicon.ico``: the icon browsers ask for;
* ``GET /presets``: the named pipelines a user can pick, with descriptions;
* ``GET|POST /pipelines/validate``: a pipeline's canonical form, or the refusal (400);
* ``GET /openapi.json`` and ``GET /api``: the API description, as data and as a page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from imgpipe.domain.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.upload.apidoc import API_CSP, render_api_page
from imgpipe.upload.context import UploadContext, context_of
from imgpipe.upload.openapi import openapi_document

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: Sent with the page and with every file of it, whichever path serves it.
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    """The page: upload images, follow their jobs, see results and provenance."""
    return web.FileResponse(STATIC_DIR / "index.html",
                            headers={"Cache-Control": "no-cache", **PAGE_HEADERS})


@routes.get("/static/{path:.+}")
async def static_file(request: web.Request) -> web.FileResponse:
    """A file of the page; anything else is a JSON 404 like every other refusal."""
    root = STATIC_DIR.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise ImgpipeError("There is no such file.", reason="not_found", status=404)
    return web.FileResponse(path, headers=PAGE_HEADERS)


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.FileResponse:
    """The icon browsers ask for on their own (the page itself links the SVG one)."""
    return web.FileResponse(STATIC_DIR / "favicon.ico", headers={
        "Content-Type": "image/x-icon", "Cache-Control": "public, max-age=86400"})


@routes.get("/presets")
async def get_presets(request: web.Request) -> web.Response:
    """Every preset a user can pick: name, canonical pipeline, description, built-in or not."""
    ctx = context_of(request)
    presets = [preset.to_json() for preset in ctx.preset_entries.values()]
    default = ctx.settings.upload_default_pipeline or DEFAULT_PIPELINE
    return web.json_response({"default": default, "presets": presets})


def _validated(ctx: UploadContext, spec: Any) -> dict[str, Any]:
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


@routes.get("/pipelines/validate")
@routes.post("/pipelines/validate")
async def validate_pipeline(request: web.Request) -> web.Response:
    """Check a pipeline: 200 with its canonical form, or 400 with the reason."""
    ctx = context_of(request)
    if request.method == "POST":
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput(
                "Send a JSON object such as {\"pipeline\": \"resize:w=256/format:png\"}.",
                reason="invalid_json",
            ) from None
        except RecursionError:
            raise InvalidInput(
                "The JSON body is nested too deeply: a pipeline is a list of steps, "
                "each an object of parameters.", reason="json_too_deep",
            ) from None
        spec = body.get("pipeline") if isinstance(body, dict) else None
    else:
        spec = request.query.get("pipeline")
    return web.json_response(_validated(ctx, spec))


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """Every (METHOD, path template) ``app`` answers, HEAD left out."""
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path = path.rstrip("/") + "/{path}"
        served.add((route.method, path))
    return served


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    doc = openapi_document(served_routes(request.app))
    return web.json_response(doc, dumps=lambda v: json.dumps(v, indent=1))


@routes.get("/api")
async def get_api_page(request: web.Request) -> web.Response:
    page = render_api_page(openapi_document(served_routes(request.app)))
    return web.Response(text=page, content_type="text/html", headers={
        "Content-Security-Policy": API_CSP, "X-Content-Type-Options": "nosniff"})
