"""Start-up and shutdown helpers shared by the services.

A service installs :class:`StopSignal` first, serves its health and
readiness routes at once, then connects to its backends with
:func:`until_available`: a backend that is down makes the service report
not-ready (and log why) instead of exiting into a crash loop, and SIGTERM
still stops it promptly while it waits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from imgpipe.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Backend(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...


B = TypeVar("B", bound=Backend)


class Stopped(Exception):
    """SIGTERM or SIGINT arrived while the service was still starting."""


class StopSignal:
    """SIGTERM/SIGINT as an event, from the moment it is created until :meth:`close`.

    Given ``event`` (services sharing a process, ``imgpipe dev``), that event
    is the signal and the process's signal handlers are left to its owner.
    """

    def __init__(self, event: asyncio.Event | None = None) -> None:
        self._event = event or asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._owns_signals = event is None
        if self._owns_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        if not self._event.is_set():
            log.info("stop signal received", extra={"signal": sig.name})
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    async def until(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``; raise :class:`Stopped` (cancelling it) if a stop signal comes first."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Stopped()

    def close(self) -> None:
        if self._owns_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
            self._owns_signals = False


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def until_available(
    what: str, attempt: Callable[[], Awaitable[T]], *, max_delay: float = 10.0
) -> T:
    """Call ``attempt`` until it stops raising :class:`TransientError`.

    A service whose backend is down at start waits for it (logging why)
    instead of exiting into a crash loop.
    """
    delay = 0.5
    while True:
        try:
            return await attempt()
        except TransientError as exc:
            log.warning("%s unavailable, retrying in %.1fs: %s", what, delay, exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def connected(backend: B) -> B:
    """``backend`` after one ``connect()``; closed again if that fails."""
    try:
        await backend.connect()
    except BaseException:
        await backend.close()
        raise
    return backend
