"""Fault tests: batches of jobs through the four real services while things break.

Each test runs a batch, injects its fault, waits for the batch to settle and checks
the invariant (tests/faults.py): every 202 has exactly one output and one complete
provenance record, or exactly one failed record with a reason; nothing else exists.
Each adds a line to test-artifacts/fault-report.json (batches, faults, lost, duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.domain.events import ImageEvent, ObjectRef, ProvenanceEvent, provenance_event_id
from imgpipe.testing.processes import ServiceProcesses
from tests.faults import (
    Batch,
    assert_invariant,
    check_outputs,
    report,
    settle,
    snapshot,
    stores,
    verdict,
)
from tests.images import image_bytes
from tests.system import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(240)]

FAST_RETRIES = {"AMQP_RETRY_DELAYS": "0.2,0.4,0.8"}


def images(count: int, width: int = 96, fmt: str = ".png", offset: int = 0) -> list[bytes]:
    """Distinct small images (distinct sizes give distinct bytes)."""
    return [image_bytes(width + n + offset, 64 + (n % 7), fmt) for n in range(count)]


async def http_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
                http.get(url) as resp:
            return resp.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def count_done(system: ServiceProcesses, jobs: list[str]) -> int:
    snap = await snapshot(system)
    return sum(1 for job in jobs
               if any(d.get("kind") == "step.completed" for d in snap.docs_of(job)))


async def finish(system: ServiceProcesses, batch: Batch, name: str, fault: str, injected: int,
                 timeout: float = 120, **extra: Any) -> dict[str, Any]:
    snap = await settle(system, list(batch.accepted), timeout=timeout)
    v = verdict(snap, batch.accepted)
    mismatched = await check_outputs(system, snap, batch.accepted)
    line = report(name, fault, injected, batch, v, **extra)
    assert_invariant(v)
    assert not mismatched, mismatched
    return line


def redeliveries(system: ServiceProcesses, key: str = "runner") -> int:
    return system.log(key).count("event delivered again")


# --------------------------------------------------------------------------- 1


async def test_runner_killed_mid_batch(
    system_env: ServiceProcesses, flaky: tuple[FlakyImageproc, int]
) -> None:
    """SIGTERM (graceful, exits 0) and SIGKILL mid-batch; restarted runners finish it.
    imageproc answers after 0.2 s here, so that the kills find work in flight."""
    proxy, port = flaky
    proxy.delay = 0.2
    system = system_env
    runner_env = {"IMAGEPROC_URL": f"http://127.0.0.1:{port}"}
    for key in ("imageproc", "provenance", "upload-server"):
        system.start(key)
        await system.wait_ready(key)
    batch = Batch(system)
    jobs = [j for j in await batch.upload_many(images(40)) if j is not None]
    system.start("runner", **runner_env)  # the whole batch is waiting for it
    await wait_for(lambda: _at_least(system, jobs, 4), timeout=60, interval=0.05)
    assert system.stop("runner", signal.SIGTERM) == 0, system.log("runner")[-2000:]
    system.start("runner", **runner_env)
    await system.wait_ready("runner")
    await wait_for(lambda: _at_least(system, jobs, 16), timeout=60, interval=0.05)
    system.stop("runner", signal.SIGKILL)
    system.start("runner", **runner_env)
    await system.wait_ready("runner")
    line = await finish(system, batch, "runner_killed", "runner SIGTERM + SIGKILL mid-batch", 2,
                        redelivered=redeliveries(system))
    assert line["done"] == 40
    assert line["redelivered"] > 0  # the SIGKILL left work in flight, done again after


async def _at_least(system: ServiceProcesses, jobs: list[str], n: int) -> bool:
    return await count_done(system, jobs) >= n


# --------------------------------------------------------------------------- 2


async def test_rabbitmq_restarted_mid_batch(system_env: ServiceProcesses, private_rabbitmq_server: Any) -> None:
    """The broker (a private one) restarts while jobs are queued, processed and uploaded."""
    system = system_env
    system.env["AMQP_URL"] = private_rabbitmq_server.url
    await system.start_all()
    batch = Batch(system)
    first = await batch.upload_many(images(15))

    async def more_uploads() -> list[str | None]:
        await asyncio.sleep(0.5)
        return await batch.upload_many(images(15, offset=50), concurrency=3, deadline=120)

    uploading = asyncio.create_task(more_uploads())
    await asyncio.to_thread(private_rabbitmq_server.stop, 30)
    for key in ("upload-server", "runner", "provenance"):
        await wait_for(lambda k=key: _status_is(f"{system.url(k)}/readyz", 503), timeout=20)
    assert await http_status(f"{system.url('upload-server')}/healthz") == 200
    await asyncio.to_thread(private_rabbitmq_server.start)
    second = await uploading
    for key in ("upload-server", "runner", "provenance"):
        await system.wait_ready(key, timeout=60)
    assert all(j is not None for j in first + second)
    await finish(system, batch, "rabbitmq_restarted", "RabbitMQ stopped and started mid-batch", 1,
                 timeout=150, redelivered=redeliveries(system))
    assert batch.retry_after_seen


# --------------------------------------------------------------------------- 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_couchdb_stopped_mid_batch(system_env: ServiceProcesses, couchdb_server: Any,
                                         sig: signal.Signals) -> None:
    """Provenance waits while CouchDB is down (stopped cleanly, or killed) and catches up
    after; nothing accepted is lost, nothing is written twice."""
    if not couchdb_server.restartable:
        pytest.skip("a CouchDB given by IMGPIPE_TEST_COUCHDB_URL is never stopped")
    system = system_env
    await system.start_all()
    batch = Batch(system)
    jobs = [j for j in await batch.upload_many(images(15)) if j]
    await wait_for(lambda: _at_least(system, jobs, 3), timeout=60, interval=0.1)
    await asyncio.to_thread(couchdb_server.stop, sig=sig)
    try:
        await batch.upload_many(images(15, offset=50))  # uploads do not need CouchDB
        await wait_for(lambda: _status_is(f"{system.url('provenance')}/readyz", 503), timeout=20)
        await asyncio.sleep(2)  # provenance events pile up, held
        assert await http_status(f"{system.url('provenance')}/healthz") == 200
    finally:
        couchdb_server.start()  # in this thread: a server started from a worker thread
        # would get the signal meant for its parent when that thread ends
    await system.wait_ready("provenance", timeout=60)
    line = await finish(system, batch, f"couchdb_stopped_{sig.name.lower()}",
                        f"{couchdb_server.implementation} stopped ({sig.name}) and started "
                        "mid-batch", 1)
    assert line["done"] == 30 and not batch.refused


async def _status_is(url: str, status: int) -> bool:
    return await http_status(url) == status


# --------------------------------------------------------------------------- 4


async def test_s3_stopped(system_env: ServiceProcesses, s3_server: Any) -> None:
    """Uploads get 503 + Retry-After while S3 is down and leave nothing; after it, all works."""
    system = system_env
    await system.start_all()
    batch = Batch(system)
    await batch.upload_many(images(12))
    await asyncio.to_thread(s3_server.stop)
    try:
        refused = await batch.upload_many(images(6, offset=30), retry_503=False)
        assert refused == [None] * 6 and batch.refused == {503: 6}, batch.refused
        assert batch.retry_after_seen
        assert await http_status(f"{system.url('upload-server')}/readyz") == 503
        assert await http_status(f"{system.url('upload-server')}/healthz") == 200
        assert await http_status(f"{system.url('runner')}/readyz") == 503
    finally:
        s3_server.start()  # in this thread (see above)
    await system.wait_ready("upload-server", timeout=60)
    await batch.upload_many(images(12, offset=60))
    line = await finish(system, batch, "s3_stopped", "S3 stopped and started mid-batch", 1)
    assert line["done"] == 24


# --------------------------------------------------------------------------- 5

IMAGEPROC_SECRET = "imageproc-pass-7Qm2x"


class FlakyImageproc:
    """A proxy in front of imageproc that fails chosen images: 500s, hangs, 429s."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.plan: dict[str, list[str]] = {}  # sha256 -> answers to give, then "pass"
        self.always: dict[str, str] = {}
        self.requests: dict[str, int] = {}
        self.delay = 0.0
        self.injected = 0

    def sha(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    async def process(self, request: web.Request) -> web.StreamResponse:
        """``/process`` (bytes: keyed by their hash) and ``/process-object`` (JSON with
        presigned URLs: keyed by the input's sha256 it names) alike."""
        data = await request.read()
        by_object = request.path == "/process-object"
        sha = json.loads(data)["input"]["sha256"] if by_object else self.sha(data)
        self.requests[sha] = self.requests.get(sha, 0) + 1
        queued = self.plan.get(sha) or []
        answer = queued.pop(0) if queued else self.always.get(sha, "pass")
        self.injected += answer != "pass"
        await asyncio.sleep(self.delay)
        if answer == "500":
            return web.json_response({"error": {"reason": "vips_crash", "message": "boom"}},
                                     status=500)
        if answer == "429":
            return web.json_response({"error": {"reason": "overloaded", "message": "busy"}},
                                     status=429, headers={"Retry-After": "1"})
        if answer == "hang":
            await asyncio.sleep(30)
        if answer == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower().startswith("x-imgpipe") or k.lower() == "content-type"}
        async with aiohttp.ClientSession() as http, http.post(
            f"{self.upstream}{request.path}", params=request.query, data=data, headers=headers,
        ) as resp:
            body = await resp.read()
            headers = {k: v for k, v in resp.headers.items()
                       if k.lower().startswith("x-imgpipe") or k.lower() == "content-type"}
            return web.Response(body=body, status=resp.status, headers=headers)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})


@pytest.fixture
async def flaky(system_env: ServiceProcesses) -> AsyncIterator[tuple[FlakyImageproc, int]]:
    proxy = FlakyImageproc(system_env.url("imageproc"))
    app = web.Application()
    app.router.add_post("/process", proxy.process)
    app.router.add_post("/process-object", proxy.process)
    app.router.add_get("/healthz", proxy.healthz)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield proxy, port
    await runner.cleanup()


def dlq(system: ServiceProcesses, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | system.env
    return subprocess.run([sys.executable, "-m", "imgpipe.cli", "dlq", *args,
                           "--exchange", system.env["AMQP_EXCHANGE_SUBSCRIBE"]],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_imageproc_errors_and_hangs(
    system_env: ServiceProcesses, flaky: tuple[FlakyImageproc, int]
) -> None:
    """5xx, dropped connections and hangs retry with back-off, then dead-letter with a
    failed record; 429 waits without spending attempts; replayed jobs complete."""
    proxy, port = flaky
    system = system_env
    system.env |= FAST_RETRIES
    for service in ("imageproc", "provenance", "upload-server"):
        system.start(service)
    system.start("runner", IMAGEPROC_URL=f"http://imgpipe:{IMAGEPROC_SECRET}@127.0.0.1:{port}",
                 IMAGEPROC_CLIENT_TIMEOUT="1")
    for key in ("imageproc", "provenance", "upload-server", "runner"):
        await system.wait_ready(key)
    pics = images(24)
    sha = [proxy.sha(p) for p in pics]
    for s in sha[0:4]:
        proxy.plan[s] = ["500", "500"]          # recovers on the 3rd attempt
    for s in sha[4:6]:
        proxy.plan[s] = ["429", "429", "429"]   # overloaded: waits, no attempt spent
    for s in sha[6:9]:
        proxy.always[s] = "500"                 # never works: dead-lettered
    for s in sha[9:11]:
        proxy.always[s] = "hang"                # times out every time
    for s in sha[11:13]:
        proxy.always[s] = "drop"                # connection dropped every time
    batch = Batch(system)
    await batch.upload_many(pics[:6] + pics[13:])
    await batch.upload_many(pics[6:13], expect="failed")
    snap = await settle(system, list(batch.accepted), timeout=120)
    v = verdict(snap, batch.accepted)
    assert_invariant(v)
    assert (v.done, v.failed) == (17, 7)
    requests = [proxy.requests.get(s) for s in sha[:13]]
    # two 500s, then it works (a stale pooled connection can cost an attempt unseen here)
    assert all(r in (3, 4) for r in requests[0:4]), requests
    assert all(r is not None and 1 <= r <= 4 for r in requests[6:13]), requests  # bounded
    reasons = {d["reason"] for d in snap.docs if d.get("kind") == "step.failed"}
    assert reasons == {"vips_crash", "imageproc_timeout", "imageproc_unavailable"}

    shown = dlq(system, "show", "--json")
    assert shown.returncode == 0, shown.stderr
    letters = json.loads(shown.stdout)
    failed_jobs = sorted(j for j, e in batch.accepted.items() if e == "failed")
    assert sorted(letter["job_id"] for letter in letters) == failed_jobs
    assert all(letter["attempts"] == 4 for letter in letters)

    everything = json.dumps(snap.docs) + shown.stdout + system.log("runner")
    assert IMAGEPROC_SECRET not in everything

    proxy.always.clear()  # imageproc is healthy again: an operator replays
    replayed = dlq(system, "replay")
    assert replayed.returncode == 0 and "replayed 7" in replayed.stdout, replayed.stderr
    for job in failed_jobs:
        batch.accepted[job] = "replayed"
    await wait_for(lambda: _at_least(system, list(batch.accepted), 24), timeout=60)
    await finish(system, batch, "imageproc_errors", "imageproc 500s, 429s, hangs, drops",
                 proxy.injected, failed_before_replay=v.failed, dead_lettered=len(letters),
                 replayed=7)
    assert json.loads(dlq(system, "show", "--json").stdout) == []


# --------------------------------------------------------------------------- 6


async def _publish_job(broker: AmqpBroker, system: ServiceProcesses, job: str, data: bytes,
                       copies: int) -> None:
    s3, _ = stores(system)
    await s3.connect()
    try:
        stored = await s3.put_bytes(system.env["S3_INPUT_BUCKET"], f"uploads/{job}", data,
                                    content_type="image/png", metadata={"job-id": job})
    finally:
        await s3.close()
    image = ObjectRef(bucket=stored.bucket, key=stored.key, sha256=stored.sha256,
                      size=stored.size, media_type="image/png", format="png")
    pipelines = ("resize:w=48/format:png",)
    event = ImageEvent(kind="uploaded", job_id=job, stage="upload", image=image,
                       pipelines=pipelines, filename="by-hand.png")
    received = ProvenanceEvent(
        event_id=provenance_event_id(job, "upload", "job.received"), kind="job.received",
        job_id=job, stage="upload", input=image, output=image, pipelines=pipelines)
    for _ in range(copies):
        await broker.publish(system.env["AMQP_EXCHANGE_SUBSCRIBE"], event.to_bytes(),
                             message_id=event.event_id, routing_key="uploaded")
        await broker.publish(system.env["AMQP_EXCHANGE_PROV"], received.to_bytes(),
                             message_id=received.event_id, routing_key="job.received")


async def test_same_event_delivered_twice(system: ServiceProcesses, rabbitmq_url: str) -> None:
    """Events published twice (and three times) by hand, before and after processing:
    one output object and one record each."""
    batch = Batch(system)
    uploaded = [j for j in await batch.upload_many(images(10)) if j]
    await settle(system, uploaded)
    broker = AmqpBroker(rabbitmq_url)
    await broker.connect()
    try:
        snap = await snapshot(system)
        for job in uploaded:  # again, after it was processed: twice more
            [record] = [d for d in snap.docs_of(job) if d["kind"] == "job.received"]
            image = ObjectRef.model_validate(record["input"])
            event = ImageEvent(kind="uploaded", job_id=job, stage="upload", image=image,
                               pipelines=tuple(record["pipelines"]))
            for _ in range(2):
                await broker.publish(system.env["AMQP_EXCHANGE_SUBSCRIBE"], event.to_bytes(),
                                     message_id=event.event_id, routing_key="uploaded")
        fresh = [f"{n:032x}" for n in range(1, 11)]  # never seen before: three copies at once
        for job, data in zip(fresh, images(10, offset=40), strict=True):
            await _publish_job(broker, system, job, data, copies=3)
            batch.accepted[job] = "done"
    finally:
        await broker.close()

    async def all_handled() -> bool:  # 10 + 20 + 30 image events acked by the runner
        async with aiohttp.ClientSession() as http, \
                http.get(f"{system.url('runner')}/metrics") as resp:
            text = await resp.text()
        acked = [line for line in text.splitlines()
                 if line.startswith("imgpipe_messages_total") and 'outcome="acked"' in line]
        return sum(float(line.rsplit(" ", 1)[1]) for line in acked) >= 60

    await wait_for(all_handled, timeout=90)
    await finish(system, batch, "duplicate_events", "events published 2-3 times by hand",
                 10 * 2 + 10 * 2)  # extra copies: 2 per processed job, 2 per fresh one


# --------------------------------------------------------------------------- 7


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


async def test_poison_input(system_env: ServiceProcesses) -> None:
    """Input that looks like an image but is not, truncated, or a decompression bomb:
    a failed record with a reason, dead-lettered, every service still healthy."""
    system = system_env
    system.env |= FAST_RETRIES
    await system.start_all()
    good = images(12, fmt=".jpg")
    jpeg = image_bytes(400, 300, ".jpg")
    poison = [
        b"\x89PNG\r\n\x1a\n" + os.urandom(2000),                # PNG signature, garbage after
        b"\xff\xd8\xff\xe0" + b"\x00" * 64 + os.urandom(500),   # JPEG magic, nothing valid
        jpeg[: len(jpeg) // 2],                                 # truncated JPEG
        image_bytes(300, 200, ".png")[:-200],                   # truncated PNG
        png_bomb(),                                             # 900 megapixels claimed
        b"GIF89a" + os.urandom(300),                            # GIF magic, garbage
    ]
    batch = Batch(system)
    await batch.upload_many(good[:6])
    await batch.upload_many(poison, expect="failed")
    await batch.upload_many(good[6:])
    snap = await settle(system, list(batch.accepted))
    reasons = sorted(str(d.get("reason")) for d in snap.docs if d.get("kind") == "step.failed")
    for key in ("upload-server", "runner", "provenance", "imageproc"):
        assert await http_status(f"{system.url(key)}/readyz") == 200, key
        assert system.procs[key].poll() is None
    shown = dlq(system, "show", "--json")
    assert len(json.loads(shown.stdout)) == len(poison), shown.stdout
    line = await finish(system, batch, "poison_input", "undecodable, truncated, bomb images",
                        len(poison), reasons=reasons)
    assert (line["done"], line["failed"]) == (12, len(poison))
