"""The upload service's HTTP application: one context, routes grouped by resource.

``create_app`` puts one :class:`~imgpipe.upload.context.UploadContext` on the
app and adds each resource's routes (``routes/``) and the operational ones
(/healthz, /readyz, /metrics). Middlewares run in this order: metrics, JSON
errors, API tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.http import (
    HEADER_TIMEOUT,
    add_ops_routes,
    errors_middleware,
    hide_paths,
    metrics_middleware,
)
from imgpipe.upload.auth import auth_middleware
from imgpipe.upload.context import CONTEXT, Backends, UploadContext
from imgpipe.upload.intake import deadline_middleware
from imgpipe.upload.routes import (
    events,
    graph,
    ingest,
    jobs,
    operator,
    pages,
    provenance,
    uploads,
)
from imgpipe.upload.settings import UploadSettings


def create_app(
    settings: UploadSettings, backends: Backends, presets: Mapping[str, str] | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, errors_middleware, auth_middleware(settings.api_tokens()),
                     deadline_middleware(settings.upload_request_timeout)],
        client_max_size=1024**2,
    )
    app[HEADER_TIMEOUT] = settings.upload_header_timeout
    ctx = UploadContext(settings, backends, presets)
    app[CONTEXT] = ctx
    for resource in (uploads, ingest, jobs, events, provenance, graph, operator, pages):
        app.add_routes(resource.routes)
    hide_paths(app, [embedded_path(url) for url in (settings.amqp_url, settings.s3_url,
                                                     settings.couchdb_url) if url and is_embedded(url)])
    add_ops_routes(app, {
        "rabbitmq": backends.broker.check,
        "s3": backends.store.check,
        "couchdb": backends.provenance.check,
    })

    async def close(_: web.Application) -> None:
        await ctx.close()

    app.on_cleanup.append(close)
    return app
