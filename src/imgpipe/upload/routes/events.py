"""Server-sent events: ``GET /jobs/{job_id}/events`` and ``GET /events``.

Fed from the provenance store's changes feed, not from the broker: every
status a client can see is derived from the records in that store, the feed
is durable and ordered, and a position in it (CouchDB's update sequence, the
embedded store's row sequence) is exactly what ``Last-Event-ID`` needs to
resume. The broker's provenance messages are consumed once by the
provenance service and cannot be replayed from a position, and the
embedded broker has no fan-out for a second consumer; the changes feed works
the same on CouchDB and on ``imgpipe dev``'s SQLite store.

Invariants: a stream never loses a record (a reconnect with the last id it
saw continues after it; the id is sent on the last event of each batch, so a
stream cut mid-batch repeats that batch: at least once, never missing); it
ends when the service stops; it sends a comment every ``HEARTBEAT`` seconds
so proxies keep it open. Event types: ``job`` (a job's whole status view,
on ``/jobs/{id}/events``) and ``record`` (one provenance record in short, on
``/events``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

from imgpipe.errors import ImgpipeError
from imgpipe.runtime.http import STOPPING
from imgpipe.upload.context import UploadContext, context_of, job_id_of

POLL = 0.5
HEARTBEAT = 15.0
BATCH = 200
RETRY_MS = 2000
_POSITION = re.compile(r"\A[0-9A-Za-z_.-]{1,256}\Z")
RECORD_FIELDS = ("job_id", "kind", "stage", "pipeline", "time", "reason", "message", "attempt")

routes = web.RouteTableDef()


def _resume_from(request: web.Request) -> str | None:
    """The position a client asks to continue from (header, or ``?last_event_id=``)."""
    value = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    return value if value and _POSITION.match(value) else None


def _record(doc: dict[str, Any]) -> dict[str, Any]:
    short = {name: doc[name] for name in RECORD_FIELDS if doc.get(name) is not None}
    output = doc.get("output") if doc.get("kind") == "step.completed" else None
    if isinstance(output, dict):
        short["output"] = {k: output.get(k) for k in ("sha256", "format", "width", "height",
                                                       "size")}
    return short


def _is_record(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("job_id"), str) and isinstance(doc.get("kind"), str)


class EventStream:
    """One client's stream: writes events, keeps the position, sends heartbeats."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.sent_at = time.monotonic()

    async def send(self, event: str, data: Any, position: str | None = None) -> None:
        lines = [f"event: {event}"]
        if position is not None:
            lines.append(f"id: {position}")
        lines.append("data: " + json.dumps(data, separators=(",", ":")))
        await self.response.write(("\n".join(lines) + "\n\n").encode())
        self.sent_at = time.monotonic()

    async def idle(self) -> None:
        if time.monotonic() - self.sent_at >= HEARTBEAT:
            await self.response.write(b": keepalive\n\n")
            self.sent_at = time.monotonic()
        await asyncio.sleep(POLL)

    @property
    def stopping(self) -> bool:
        return self.request.app[STOPPING].is_set()


async def _open(request: web.Request) -> EventStream:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    return EventStream(request, response)


async def _position(ctx: UploadContext, asked: str | None) -> str:
    if asked is not None:
        return asked
    return (await ctx.backends.provenance.changes(None))[1]


async def _follow(ctx: UploadContext, stream: EventStream, position: str,
                  job_id: str | None) -> None:
    store = ctx.backends.provenance
    shown: dict[str, bool] = {}  # job id -> may this client see it (UPLOAD_VISIBILITY=own)

    async def visible(doc: dict[str, Any]) -> bool:
        if ctx.settings.upload_visibility == "all":
            return True
        owner_job = str(doc["job_id"])
        if owner_job not in shown:
            shown[owner_job] = ctx.may_see(stream.request, await ctx.owner(owner_job))
        return shown[owner_job]

    while not stream.stopping:
        try:
            docs, after = await store.changes(position, limit=BATCH)
        except ImgpipeError as exc:
            await stream.send("unavailable", exc.to_dict()["error"])
            await asyncio.sleep(RETRY_MS / 1000)
            continue
        records = [d for d in docs if _is_record(d) and (job_id is None or d["job_id"] == job_id)]
        if job_id is None:
            records = [d for d in records if await visible(d)]
        if job_id is not None and records:
            await stream.send("job", await ctx.require_job(stream.request, job_id), after)
        elif job_id is None:
            for n, doc in enumerate(records):
                await stream.send("record", _record(doc),
                                  after if n == len(records) - 1 else None)
        if after != position and not records:
            await stream.response.write(f"id: {after}\n\n".encode())  # moves the client on
        position = after
        if not docs:
            await stream.idle()


@routes.get("/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    """A job's status as it changes: a ``job`` event with the whole view each time."""
    ctx = context_of(request)
    job_id = job_id_of(request)
    view = await ctx.require_job(request, job_id)
    asked = _resume_from(request)
    position = await _position(ctx, asked)
    stream = await _open(request)
    try:
        if asked is None:
            await stream.send("job", view, position)
        await _follow(ctx, stream, position, job_id)
    except ConnectionError:
        pass  # the client went away
    return stream.response


@routes.get("/events")
async def all_events(request: web.Request) -> web.StreamResponse:
    """Every provenance record as it is stored (``record`` events): uploads, steps, failures."""
    ctx = context_of(request)
    position = await _position(ctx, _resume_from(request))
    stream = await _open(request)
    try:
        await _follow(ctx, stream, position, None)
    except ConnectionError:
        pass
    return stream.response
