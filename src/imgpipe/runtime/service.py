"""How every imgpipe service starts and stops.

Each ``run_<service>(settings, *, stop=None, listening=None)`` goes through
one of the two shapes here, so that the four services behave alike:

* the service answers /healthz, /readyz and /metrics from the start; until
  its backends answer, /readyz says what it waits for (never a crash loop);
* ``stop`` (an :class:`asyncio.Event`) ends it; without one, SIGTERM or
  SIGINT does. Services that share a process (``imgpipe dev``) are each
  given an event, so that one owner of the signals stops them in order;
* at stop, /readyz answers "stopping", work in progress finishes (up to
  ``SHUTDOWN_GRACE`` seconds), then the backends close, last made first;
* ``listening`` is called with the service's base URL once it listens (a
  caller that asked for port 0 learns the port).

:func:`serve_app` is the shape of an HTTP service (upload, imageproc): the
whole API answers at once and backends connect in the background.
:func:`serve_consumer` is the shape of a queue consumer (runner,
provenance): only the operational routes answer until it consumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol

from aiohttp import web

from imgpipe.errors import Unavailable
from imgpipe.runtime.config import LogSettings
from imgpipe.runtime.http import (
    READY_CHECKS,
    STOPPING,
    ReadyCheck,
    Refresh,
    ops_app,
    serve,
    stop_serving,
)
from imgpipe.runtime.lifecycle import Stopped, StopSignal, cancel

log = logging.getLogger(__name__)

Listening = Callable[[str], None]
"""Told the base URL (``http://host:port``) a service listens on."""


class Closing(Protocol):
    async def close(self) -> None: ...


class Consuming(Protocol):
    async def stop(self, grace: float, /) -> None: ...


def _started(name: str, settings: LogSettings, stack: AsyncExitStack,
             stop: asyncio.Event | None, backends: Sequence[Closing]) -> StopSignal:
    """The stop signal, installed before anything can await; backends closed at the end."""
    signal = StopSignal(stop)
    stack.callback(signal.close)
    for backend in backends:
        stack.push_async_callback(backend.close)
    for line in settings.deprecations():
        log.warning("%s: %s", name, line)
    return signal


def _tell(runner: web.AppRunner, listening: Listening | None) -> None:
    if listening is not None:
        host, port = runner.addresses[0][:2]
        listening(f"http://{host}:{port}")


async def serve_app(
    name: str,
    settings: LogSettings,
    app: web.Application,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    listening: Listening | None = None,
    backends: Sequence[Closing] = (),
    connect: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serve ``app`` until stopped; ``connect`` reaches the backends meanwhile.

    At stop the service stops listening, lets requests in progress finish
    (``SHUTDOWN_GRACE``), then closes ``backends``.
    """
    async with AsyncExitStack() as stack:
        signal = _started(name, settings, stack, stop, backends)
        runner = await serve(app, host, port, grace=settings.shutdown_grace)
        stack.push_async_callback(stop_serving, runner, app, settings.shutdown_grace)
        if connect is not None:
            stack.push_async_callback(cancel, asyncio.create_task(connect()))
        stack.callback(app[STOPPING].set)
        _tell(runner, listening)
        await signal.wait()
    log.info("%s stopped", name)


async def serve_consumer(
    name: str,
    settings: LogSettings,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    listening: Listening | None = None,
    backends: Sequence[Closing],
    start: Callable[[], Coroutine[Any, Any, Consuming]],
    waiting_for: str,
    checks: Mapping[str, ReadyCheck],
    checks_from_start: Mapping[str, ReadyCheck] | None = None,
    refresh: Sequence[Refresh] = (),
) -> None:
    """Serve the operational routes, ``start`` consuming, and consume until stopped.

    While ``start`` waits for the backends, /readyz answers 503 with
    ``waiting_for`` (and ``checks_from_start``); once it consumes, ``checks``
    decide. A stop while starting cancels ``start``. At stop the consumer
    takes no more messages, lets handlers finish (``SHUTDOWN_GRACE``), then
    the backends close.
    """
    async def starting() -> None:
        raise Unavailable(waiting_for)

    async with AsyncExitStack() as stack:
        signal = _started(name, settings, stack, stop, backends)
        app = ops_app({"startup": starting, **(checks_from_start or {})}, refresh)
        ops = await serve(app, host, port)
        stack.push_async_callback(ops.cleanup)
        _tell(ops, listening)
        try:
            consumer = await signal.until(start())
        except Stopped:
            pass
        else:
            stack.push_async_callback(consumer.stop, settings.shutdown_grace)
            stack.callback(app[STOPPING].set)
            app[READY_CHECKS].pop("startup")
            app[READY_CHECKS].update(checks)
            await signal.wait()
    log.info("%s stopped", name)
