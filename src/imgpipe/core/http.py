"""HTTP pieces every service shares: health, readiness, metrics, serving.

``/healthz`` answers while the process is alive; ``/readyz`` runs the
service's readiness checks (are its backends reachable?) and answers 503
naming the failing ones; ``/metrics`` is Prometheus' text format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from imgpipe.core.errors import ImgpipeError

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[None]]
READY_CHECKS: web.AppKey[dict[str, ReadyCheck]] = web.AppKey("ready_checks", dict)


def json_error(err: ImgpipeError, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(err.to_dict(), status=err.status, headers=headers)


def error_response(
    status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": {"reason": reason, "message": message}}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every error into a JSON body with a reason code and a sentence."""
    try:
        return await handler(request)
    except ImgpipeError as err:
        return json_error(err)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, reason, exc.text or exc.reason, headers=None)
    except asyncio.CancelledError:
        raise
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
            results[name] = f"unavailable: {type(exc).__name__}: {exc}"[:300]

    await asyncio.gather(*(run(n, c) for n, c in checks.items()))
    return web.json_response(
        {"status": "ready" if ok else "not_ready", "checks": results}, status=200 if ok else 503
    )


async def _metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def add_ops_routes(app: web.Application, checks: Mapping[str, ReadyCheck] | None = None) -> None:
    """Add /healthz, /readyz and /metrics to ``app``."""
    app[READY_CHECKS] = dict(checks or {})
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)


def ops_app(checks: Mapping[str, ReadyCheck]) -> web.Application:
    """A small app with only the operational routes (for queue consumers)."""
    app = web.Application(middlewares=[errors_middleware])
    add_ops_routes(app, checks)
    return app


async def serve(app: web.Application, host: str, port: int, *, grace: float = 20.0) -> web.AppRunner:
    """Start serving ``app``; the caller must ``await runner.cleanup()``."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    for sock in runner.addresses:
        log.info("listening", extra={"address": f"http://{sock[0]}:{sock[1]}"})
    return runner


async def wait_for_stop_signal() -> None:
    """Return when SIGTERM or SIGINT arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stop signal received")


async def wait_for_stop(stop: asyncio.Event | None = None) -> None:
    """Return when ``stop`` is set; without one, when SIGTERM or SIGINT arrives.

    Services that share a process (``imgpipe dev``) are each given an event,
    so that one owner of the signals stops them in order.
    """
    if stop is None:
        await wait_for_stop_signal()
    else:
        await stop.wait()


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
