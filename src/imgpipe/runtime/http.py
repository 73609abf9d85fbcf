"""HTTP pieces every service shares: health, readiness, metrics, serving.

``/healthz`` answers while the process is alive; ``/readyz`` runs the
service's readiness checks (are its backends reachable?) and answers 503
naming the failing ones; ``/metrics`` is Prometheus' text format.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from imgpipe.errors import ImgpipeError, TransientError
from imgpipe.runtime.logs import redact

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[None]]
Refresh = Callable[[], Awaitable[None]]
READY_CHECKS: web.AppKey[dict[str, ReadyCheck]] = web.AppKey("ready_checks", dict)
METRICS_REFRESH: web.AppKey[list[Refresh]] = web.AppKey("metrics_refresh", list)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
#: Seconds a connection may take to send a request's headers, and may stay idle between
#: requests (aiohttp's keep-alive timeout: it also closes a connection still sending headers).
HEADER_TIMEOUT: web.AppKey[float] = web.AppKey("header_timeout", float)
#: Directories (an embedded backend's data) no answer may name: replaced by ``<data>``.
HIDDEN_PATHS: web.AppKey[tuple[str, ...]] = web.AppKey("hidden_paths", tuple)


def hide_paths(app: web.Application, directories: Iterable[Path]) -> None:
    """Keep ``directories`` (and their parents' names) out of every answer of ``app``."""
    hidden = {str(d.parent) for d in directories} | {str(d.resolve().parent) for d in directories}
    app[HIDDEN_PATHS] = tuple(sorted((h for h in hidden if h != "/"), key=len, reverse=True))


def public_text(app: web.Application, text: str) -> str:
    """``text`` fit for a client: secrets redacted, hidden directories replaced."""
    text = redact(text)
    for path in app.get(HIDDEN_PATHS, ()):
        text = text.replace(path, "<data>")
    return text


class InFlight:
    """Requests being handled, so that a stopping service can let them finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


INFLIGHT: web.AppKey[InFlight] = web.AppKey("inflight", InFlight)

REQUESTS = Counter("imgpipe_http_requests", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
REQUEST_TIME = Histogram("imgpipe_http_request_seconds", "HTTP request duration by route",
                         ["route"], buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def json_error(err: ImgpipeError, headers: Mapping[str, str] | None = None) -> web.Response:
    body = err.to_dict()
    body["error"]["message"] = redact(err.message)
    extra = dict(headers or {})
    if isinstance(err, TransientError) and err.retry_after is not None:
        extra.setdefault("Retry-After", str(max(1, math.ceil(err.retry_after))))
    return web.json_response(body, status=err.status, headers=extra or None)


def error_response(
    status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"reason": reason, "message": redact(message)}}
    return web.json_response(body, status=status, headers=headers)


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count requests and their outcomes; time them (label: the route, not the path)."""
    started = time.perf_counter()
    status = 500
    inflight = request.app.get(INFLIGHT)
    if inflight is not None:
        inflight.enter()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if inflight is not None:
            inflight.leave()
        route = _route(request)
        REQUESTS.labels(route, request.method, str(status)).inc()
        REQUEST_TIME.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every error into a JSON body with a reason code and a sentence."""
    try:
        return await handler(request)
    except ImgpipeError as err:
        if err.status >= 500:
            log.warning("%s %s answered %d: %s", request.method, request.path, err.status,
                        err.message, extra={"reason": err.reason})
        err.message = public_text(request.app, err.message)
        return json_error(err)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, reason, exc.text or exc.reason, headers=None)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        log.info("client went away during %s %s", request.method, request.path)
        return web.Response(status=499, text="client closed the connection")  # never delivered
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "imgpipe failed to handle this request.")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    checks = request.app[READY_CHECKS]
    results: dict[str, Any] = {}
    ok = True

    async def run(name: str, check: ReadyCheck) -> None:
        nonlocal ok
        try:
            await asyncio.wait_for(check(), timeout=3)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            ok = False
            results[name] = public_text(request.app,
                                        f"unavailable: {type(exc).__name__}: {exc}")[:300]

    await asyncio.gather(*(run(n, c) for n, c in list(checks.items())))
    status = "ready" if ok else "not_ready"
    if request.app[STOPPING].is_set():
        ok, status = False, "stopping"
    return web.json_response({"status": status, "checks": results}, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    for refresh in request.app[METRICS_REFRESH]:
        try:
            await asyncio.wait_for(refresh(), timeout=2)
        except Exception:
            log.debug("metrics refresh failed", exc_info=True)
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def add_ops_routes(
    app: web.Application,
    checks: Mapping[str, ReadyCheck] | None = None,
    refresh: Sequence[Refresh] | None = None,
) -> None:
    """Add /healthz, /readyz and /metrics to ``app``.

    ``checks`` may be changed later through ``app[READY_CHECKS]`` (a service
    adds its backends' checks once it has them); ``refresh`` callables update
    gauges before each scrape; ``app[STOPPING]`` set makes /readyz answer 503.
    """
    app[READY_CHECKS] = dict(checks or {})
    app[METRICS_REFRESH] = list(refresh or [])
    app[STOPPING] = asyncio.Event()
    app[INFLIGHT] = InFlight()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)


def ops_app(
    checks: Mapping[str, ReadyCheck], refresh: Sequence[Refresh] | None = None
) -> web.Application:
    """A small app with only the operational routes (for queue consumers)."""
    app = web.Application(middlewares=[metrics_middleware, errors_middleware])
    add_ops_routes(app, checks, refresh)
    return app


async def serve(app: web.Application, host: str, port: int, *, grace: float = 20.0) -> web.AppRunner:
    """Start serving ``app``; the caller must ``await runner.cleanup()``."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace, access_log=None,
                           keepalive_timeout=app.get(HEADER_TIMEOUT, 75.0))
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    for sock in runner.addresses:
        log.info("listening", extra={"address": f"http://{sock[0]}:{sock[1]}"})
    return runner


async def stop_serving(runner: web.AppRunner, app: web.Application, grace: float) -> None:
    """Stop listening, let requests in progress finish (up to ``grace`` s), then close.

    aiohttp's own shutdown cancels a request still reading its body; an
    upload that is streaming when SIGTERM arrives is let finish here first.
    """
    for site in list(runner.sites):
        await site.stop()
    inflight = app.get(INFLIGHT)
    if inflight is not None and not await inflight.wait_idle(grace):
        log.warning("stopping with %d requests still in progress", inflight.count)
    await runner.cleanup()
