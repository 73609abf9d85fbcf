"""Reading ``text/event-stream`` (server-sent events) with aiohttp, resuming after a cut.

:func:`follow` yields :class:`Event` objects from a URL; when the connection
drops it reconnects with ``Last-Event-ID`` (the last id received), so the
caller sees each event at least once and misses none, for up to
``reconnects`` consecutive failures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class StreamRefused(Exception):
    """The server answered the stream request with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"event stream refused: HTTP {status}")
        self.status = status


async def parse(
    lines: AsyncIterable[bytes],
) -> AsyncIterator[tuple[Event | None, str | None]]:
    """``(event, id)`` per dispatched event; ``(None, id)`` for an id-only block (moves on)."""
    event, last_id, seen_id = "message", None, False
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield Event(event, "\n".join(data), last_id), last_id
            elif seen_id:
                yield None, last_id
            event, data, seen_id = "message", [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            last_id, seen_id = value, True


async def follow(
    session: aiohttp.ClientSession, url: str, *, last_event_id: str | None = None,
    reconnects: int = 5, delay: float = 0.5,
) -> AsyncGenerator[Event, None]:
    """Events of ``url`` for as long as the caller iterates; reconnects after a cut."""
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        try:
            async with session.get(url, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
                if resp.status != 200:
                    raise StreamRefused(resp.status)
                async for event, position in parse(resp.content):
                    failures = 0
                    if position is not None:
                        last_event_id = position
                    if event is not None:
                        yield event
        except (aiohttp.ClientError, TimeoutError):
            pass
        failures += 1
        if failures > reconnects:
            raise ConnectionError(f"{url}: the event stream broke {failures} times in a row")
        await asyncio.sleep(delay)
