"""Start-up helpers shared by the services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from imgpipe.core.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


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
