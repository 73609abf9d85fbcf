"""Ingest: jobs for images already in a bucket, against SeaweedFS and a real broker.

A few hundred objects (images, some non-images, some outside the prefix) are
put in a bucket of their own; a run is interrupted part-way, resumed, run
again in full (everything skipped, nothing read), and run after one object
changed (exactly one new job). The jobs' messages are read back from the
broker's queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json

import pytest
from PIL import Image

from imgpipe.broker.protocol import Broker, Delivery
from imgpipe.broker.topology import work_queue_name
from imgpipe.errors import InvalidInput
from imgpipe.ingest.ledger import Ledger
from imgpipe.ingest.run import Exchanges, IngestRun, Progress
from imgpipe.ingest.source import BucketNotAllowed, Source, allowed_source, parse_source
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore

IMAGES = 300
PIPELINES = ("resize:w=64/format:png",)


def png(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (n % 256, n // 256, 7)).save(out, format="PNG")
    return out.getvalue()


def image_key(n: int) -> str:
    return f"photos/{n % 7}/day-{n // 7:03d}/img-{n:04d}.png"


async def _fill(store: ObjectStore, bucket: str) -> None:
    await store.ensure_bucket(bucket)
    limit = asyncio.Semaphore(16)

    async def put(key: str, data: bytes, ctype: str) -> None:
        async with limit:
            await store.put_bytes(bucket, key, data, content_type=ctype)

    await asyncio.gather(
        *(put(image_key(n), png(n), "image/png") for n in range(IMAGES)),
        *(put(f"photos/notes-{n}.txt", b"field notes " * 10, "text/plain") for n in range(5)),
        *(put(f"elsewhere/img-{n}.png", png(1000 + n), "image/png") for n in range(5)))


async def _messages(broker: Broker, exchange: str, expected: int) -> list[dict[str, object]]:
    """Every message waiting in ``exchange``'s work queue (at least ``expected`` of them)."""
    bodies: list[dict[str, object]] = []
    enough = asyncio.Event()

    async def handle(delivery: Delivery) -> None:
        bodies.append(json.loads(delivery.body))
        if len(bodies) >= expected:
            enough.set()

    consumer = await broker.consume(work_queue_name(exchange), handle, prefetch=50)
    try:
        await asyncio.wait_for(enough.wait(), 120)
        await asyncio.sleep(0.5)  # anything beyond ``expected`` arrives too
    finally:
        await consumer.stop(5)
    return bodies


async def _run(ingest: IngestRun, source: Source, *, stop_after: int | None = None,
               restart: bool = False) -> Progress:
    last = None
    async with contextlib.aclosing(ingest.run(source, PIPELINES, restart=restart)) as run:
        async for progress in run:
            last = progress
            if stop_after is not None and progress.queued >= stop_after:
                break
    assert last is not None
    return last


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend_set", ["servers", "embedded"])
async def test_ingest_a_bucket_interrupted_resumed_and_rerun(
    backend_env: dict[str, str], object_store: ObjectStore, broker: Broker, unique_name: str
) -> None:
    archive = f"{unique_name}-archive"
    await _fill(object_store, archive)
    exchanges = Exchanges(backend_env["AMQP_EXCHANGE_SUBSCRIBE"], backend_env["AMQP_EXCHANGE_PROV"])
    for exchange in (exchanges.subscribe, exchanges.provenance):
        await broker.declare_work_queue(exchange)
    ledger = Ledger(object_store, backend_env["S3_INPUT_BUCKET"])
    ingest = IngestRun(object_store, broker, ledger, exchanges, max_bytes=1 << 20, parallel=4,
                       interval=0.01)
    source = parse_source(f"s3://{archive}/photos/")

    first = await _run(ingest, source, stop_after=100)
    assert not first.done and first.queued >= 100
    saved = await ledger.cursor(source, PIPELINES)
    assert saved and saved == first.cursor

    second = await _run(ingest, source)
    assert second.done and second.resumed_after == saved
    assert second.listed <= IMAGES + 5 - 90  # it went on from the cursor, not from the start
    assert first.queued + second.queued + second.skipped >= IMAGES  # in flight at the stop: skipped
    assert second.refused + first.refused == 5
    assert {e["reason"] for e in first.errors + second.errors} == {"not_an_image"}
    assert await ledger.cursor(source, PIPELINES) == ""  # a finished run leaves no cursor

    again = await _run(ingest, source)
    assert again.done and again.resumed_after == ""
    assert (again.listed, again.skipped, again.queued, again.bytes_read) == (IMAGES + 5,
                                                                              IMAGES + 5, 0, 0)

    await object_store.put_bytes(archive, image_key(42), png(5000), content_type="image/png")
    await object_store.put_bytes(archive, image_key(43), png(43), content_type="image/png")
    changed = await _run(ingest, source)
    assert changed.queued == 1 and changed.skipped == IMAGES + 4

    events = await _messages(broker, exchanges.subscribe, IMAGES + 1)
    jobs = {str(e["job_id"]) for e in events}
    assert len(jobs) == IMAGES + 1  # an object queued twice (in flight at the stop) is one job
    assert len(events) <= IMAGES + 1 + 4
    keys = {e["image"]["key"] for e in events}  # type: ignore[index]
    assert keys == {image_key(n) for n in range(IMAGES)}
    assert all(e["image"]["bucket"] == archive for e in events)  # type: ignore[index]

    received = await _messages(broker, exchanges.provenance, IMAGES + 1)
    record = next(r for r in received if r["input"]["key"] == image_key(7))  # type: ignore[index]
    assert record["kind"] == "job.received" and record["filename"] == "img-0007.png"
    assert record["input"]["bucket"] == archive  # type: ignore[index]
    assert record["input"]["sha256"] == hashlib.sha256(png(7)).hexdigest()  # type: ignore[index]
    assert record["agents"][0]["name"] == "imgpipe-ingest"  # type: ignore[index]


@pytest.mark.parametrize("backend_set", ["servers"])
async def test_a_missing_bucket_is_named(
    backend_env: dict[str, str], object_store: ObjectStore, broker: Broker, unique_name: str
) -> None:
    ledger = Ledger(object_store, backend_env["S3_INPUT_BUCKET"])
    ingest = IngestRun(object_store, broker, ledger,
                       Exchanges(backend_env["AMQP_EXCHANGE_SUBSCRIBE"],
                                 backend_env["AMQP_EXCHANGE_PROV"]), max_bytes=1 << 20)
    with pytest.raises(ObjectNotFound) as caught:
        await _run(ingest, parse_source(f"s3://{unique_name}-nothing/x"))
    assert caught.value.reason == "bucket_not_found"


def test_sources_are_checked_against_the_allowed_buckets() -> None:
    assert allowed_source("s3://archive/a/b", ("archive",)) == Source("archive", "a/b")
    assert parse_source("s3://archive") == Source("archive", "")
    with pytest.raises(BucketNotAllowed) as caught:
        allowed_source("s3://private/x", ("archive",))
    assert caught.value.status == 403 and "archive" in caught.value.message
    with pytest.raises(BucketNotAllowed) as none:
        allowed_source("s3://archive/x", ())
    assert "UPLOAD_INGEST_BUCKETS" in none.value.message
    for bad in ("http://archive/x", "s3://UP/x", "s3://a/x", "s3://ok-bucket/\x01"):
        with pytest.raises(InvalidInput):
            parse_source(bad)
