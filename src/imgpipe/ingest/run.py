"""One ingest run: list a prefix page by page, read each object once, queue its job.

Invariants:

* the listing is consumed as it arrives through a bounded queue: memory
  holds at most a page and the objects in flight, never the whole listing;
* each object is read once per run, streamed through sha256 (its first bytes
  tell its format); an object the ledger shows unchanged is not read at all;
* a job's id derives from bucket, key, sha256 and pipelines, so queueing the
  same object again (a run interrupted between publishing and marking) makes
  the same job, recorded once;
* the cursor only moves past keys whose every predecessor was handled, and
  is saved every few seconds and when the run stops: a resumed run repeats
  at most the objects that were in flight (which the ledger then skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

from imgpipe.broker.protocol import Broker
from imgpipe.domain.events import ObjectRef, stable_id
from imgpipe.domain.formats import SNIFF_BYTES, media_type, sniff_format
from imgpipe.domain.newjob import new_job
from imgpipe.errors import ImgpipeError
from imgpipe.ingest.ledger import Ledger, Marker
from imgpipe.ingest.source import Source
from imgpipe.storage.protocol import ListedObject, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

Outcome = Literal["queued", "skipped", "refused", "failed"]
MAX_ERRORS = 20
CURSOR_EVERY = 2.0
STOP_GRACE = 30.0
"""Seconds a stopped run waits for the objects in flight."""


@dataclass
class Progress:
    """Counts of a run so far; ``done`` once the listing is exhausted and handled."""

    source: str
    listed: int = 0
    queued: int = 0
    skipped: int = 0
    refused: int = 0
    failed: int = 0
    bytes_read: int = 0
    elapsed: float = 0.0
    resumed_after: str = ""
    cursor: str = ""
    done: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def note(self, outcome: Outcome, key: str, reason: str = "", message: str = "") -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)
        if reason and len(self.errors) < MAX_ERRORS:
            self.errors.append({"key": key, "outcome": outcome, "reason": reason,
                                "message": message})


def ingest_job_id(bucket: str, key: str, sha256: str, pipelines: tuple[str, ...],
                  owner: str | None = None) -> str:
    """The job of an object: the same object, content, pipelines and owner make the same job."""
    parts = (bucket, key, sha256, *pipelines) + ((f"owner={owner}",) if owner else ())
    return stable_id("ingest", *parts)


def ledger_scope(pipelines: tuple[str, ...], owner: str | None) -> tuple[str, ...]:
    """What a ledger entry is kept per, beside bucket and key: pipelines and owner (with
    ``UPLOAD_VISIBILITY=own`` two principals ingesting one bucket each get their jobs)."""
    return pipelines + ((f"owner={owner}",) if owner else ())


@dataclass(frozen=True)
class Exchanges:
    subscribe: str
    provenance: str


class _Cursor:
    """The last key before which every listed object is handled (objects finish out of order)."""

    def __init__(self, start: str) -> None:
        self.value = start
        self._next = 0
        self._keys: dict[int, str] = {}
        self._finished: set[int] = set()

    def listed(self, seq: int, key: str) -> None:
        self._keys[seq] = key

    def finished(self, seq: int) -> None:
        self._finished.add(seq)
        while self._next in self._finished:
            self._finished.discard(self._next)
            self.value = self._keys.pop(self._next)
            self._next += 1


class IngestRun:
    """Ingest ``source`` into jobs running ``pipelines``; iterate :meth:`run` for progress."""

    def __init__(
        self, store: ObjectStore, broker: Broker, ledger: Ledger, exchanges: Exchanges,
        *, max_bytes: int, parallel: int = 4, interval: float = 0.5, owner: str | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.ledger = ledger
        self.exchanges = exchanges
        self.max_bytes = max_bytes
        self.parallel = parallel
        self.interval = interval
        #: the principal the jobs belong to (recorded in provenance like an upload's)
        self.owner = owner

    def _scope(self, pipelines: tuple[str, ...]) -> tuple[str, ...]:
        return ledger_scope(pipelines, self.owner)

    async def _read(self, obj: ListedObject, bucket: str) -> tuple[str, int, bytes]:
        """sha256, size and first bytes of the object, reading it once."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        async for chunk in self.store.iter_bytes(bucket, obj.key):
            if len(head) < SNIFF_BYTES:
                head += chunk[:SNIFF_BYTES - len(head)]
            digest.update(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                break
        return digest.hexdigest(), size, head

    async def _one(self, source: Source, pipelines: tuple[str, ...], obj: ListedObject,
                   progress: Progress) -> None:
        marker = await self.ledger.marker(source.bucket, obj.key, self._scope(pipelines))
        if marker is not None and (marker.etag, marker.size) == (obj.etag, obj.size):
            progress.note("skipped", obj.key)
            return
        if obj.size > self.max_bytes:
            await self._refuse(source, pipelines, obj, None, "too_large",
                               f"{obj.size} bytes, more than {self.max_bytes}", progress)
            return
        try:
            sha256, size, head = await self._read(obj, source.bucket)
        except ObjectNotFound:
            progress.note("failed", obj.key, "object_not_found", "deleted while listed")
            return
        except ImgpipeError as exc:
            progress.note("failed", obj.key, exc.reason, exc.message)
            return
        progress.bytes_read += size
        if marker is not None and marker.sha256 == sha256:
            await self.ledger.mark(Marker(source.bucket, obj.key, obj.etag, obj.size, sha256,
                                          marker.job_id, marker.refused), self._scope(pipelines))
            progress.note("skipped", obj.key)
            return
        fmt = sniff_format(head)
        if fmt is None:
            await self._refuse(source, pipelines, obj, sha256, "not_an_image",
                               "its first bytes are no image format imgpipe reads", progress)
            return
        job_id = ingest_job_id(source.bucket, obj.key, sha256, pipelines, self.owner)
        image = ObjectRef(bucket=source.bucket, key=obj.key, sha256=sha256, size=size,
                          media_type=media_type(fmt), format=fmt)
        job = new_job(job_id, image, pipelines, filename=obj.key.rsplit("/", 1)[-1] or None,
                      owner=self.owner, software="imgpipe-ingest")
        await self.broker.publish(self.exchanges.subscribe, job.image_event.to_bytes(),
                                  message_id=f"{job_id}-ingest", routing_key="uploaded")
        await self.broker.publish(self.exchanges.provenance, job.received.to_bytes(),
                                  message_id=job.received.event_id, routing_key="job.received")
        await self.ledger.mark(Marker(source.bucket, obj.key, obj.etag, size, sha256, job_id),
                               self._scope(pipelines))
        progress.note("queued", obj.key)

    async def _refuse(self, source: Source, pipelines: tuple[str, ...], obj: ListedObject,
                      sha256: str | None, reason: str, message: str, progress: Progress) -> None:
        await self.ledger.mark(Marker(source.bucket, obj.key, obj.etag, obj.size, sha256, None,
                                      reason), self._scope(pipelines))
        progress.note("refused", obj.key, reason, message)

    async def run(
        self, source: Source, pipelines: tuple[str, ...], *, restart: bool = False
    ) -> AsyncGenerator[Progress, None]:
        """Yield progress every ``interval`` seconds and once at the end (``done``).

        Closing the iterator early (``contextlib.aclosing``; a ``break`` alone
        leaves it to the garbage collector) stops the run: no object is taken
        any more, the objects in flight finish (up to ``STOP_GRACE`` seconds, so
        a publish is never cut in half on a connection the caller keeps) and
        the cursor is saved, so the next run resumes after it.
        """
        started = time.monotonic()
        start = "" if restart else await self.ledger.cursor(source, self._scope(pipelines))
        progress = Progress(source.uri, resumed_after=start, cursor=start)
        cursor = _Cursor(start)
        queue: asyncio.Queue[tuple[int, ListedObject] | None] = asyncio.Queue(self.parallel * 4)

        async def lister() -> None:
            seq = 0
            listing = self.store.iter_objects(source.bucket, source.prefix, start_after=start)
            async with contextlib.aclosing(listing):
                async for obj in listing:
                    cursor.listed(seq, obj.key)
                    progress.listed += 1
                    await queue.put((seq, obj))
                    seq += 1
            for _ in range(self.parallel):
                await queue.put(None)  # (a failed listing stops the run: no end marks needed)

        in_flight: set[asyncio.Task[None]] = set()

        async def one(seq: int, obj: ListedObject) -> None:
            await self._one(source, pipelines, obj, progress)
            cursor.finished(seq)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                job = asyncio.create_task(one(*item))
                in_flight.add(job)
                job.add_done_callback(in_flight.discard)
                await asyncio.shield(job)  # a stop lets it finish: no publish cut in half

        async def saver() -> None:
            saved = start
            while True:
                await asyncio.sleep(CURSOR_EVERY)
                if cursor.value != saved:
                    saved = cursor.value
                    await self.ledger.save_cursor(source, self._scope(pipelines), saved)

        tasks = [asyncio.create_task(lister()),
                 *(asyncio.create_task(worker()) for _ in range(self.parallel))]
        saving = asyncio.create_task(saver())
        finished = False
        try:
            while True:
                done, _ = await asyncio.wait(tasks, timeout=self.interval,
                                             return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                progress.elapsed = time.monotonic() - started
                progress.cursor = cursor.value
                if all(t.done() for t in tasks):
                    break
                yield progress
            saving.cancel()  # no cursor may be written after the run finished
            with contextlib.suppress(asyncio.CancelledError):
                await saving
            await self.ledger.finish(source, self._scope(pipelines))
            finished = True
            progress.done = True
            yield progress
        finally:
            for task in [*tasks, saving]:
                task.cancel()
            if in_flight:
                await asyncio.wait(set(in_flight), timeout=STOP_GRACE)
            for job in set(in_flight):
                job.cancel()
            for task in [*tasks, saving, *in_flight]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not finished:
                progress.cursor = cursor.value
                if cursor.value != start:
                    await asyncio.shield(self.ledger.save_cursor(source, self._scope(pipelines),
                                                                  cursor.value))
                log.info("ingest stopped", extra={"source": source.uri, "after": cursor.value})
