"""Benchmark the embedded backends and `imgpipe dev`.

    .venv/bin/python bench/dev.py                 # full run (a minute or two)
    .venv/bin/python bench/dev.py --smoke         # small counts, seconds

Reports (a) the embedded broker: confirmed durable publishes per second from
``--publishers`` concurrent tasks, and publish+consume+ack round trips per
second; (b) the local object store: puts and gets of a 256 KiB object; (c) the
SQLite provenance store: writes and indexed ``find`` queries; (d) `imgpipe
dev` as a person runs it: seconds to the "open http://..." line, then jobs
(small PNG, a resize) uploaded ``--batch`` at a time until ``--jobs`` are
done: jobs per second and the median and 95th percentile from 202 to
"done"; (e) a restart with ``--jobs`` accepted jobs waiting: seconds until
they are all done. With ``--servers``, part (d) runs on the servers the environment names
(``eval "$(.venv/bin/python -m imgpipe.testing.servers env)"``), for comparison. Only
loopback and a temporary directory are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pyvips

from imgpipe.broker.embedded import EmbeddedBroker
from imgpipe.broker.protocol import Delivery
from imgpipe.client.api import Client
from imgpipe.provstore.sqlite import SqliteProvenanceStore
from imgpipe.storage.local import LocalStore
from imgpipe.testing.processes import DevProcess, wait_answering

BACKENDS = ("AMQP_", "S3_", "COUCHDB_", "RABBITMQ_")


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


async def _timed(func: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await func()
    return time.perf_counter() - start


async def bench_broker(root: Path, messages: int, publishers: int) -> dict[str, Any]:
    broker = EmbeddedBroker(root / "broker")
    await broker.connect()
    queue = await broker.declare_work_queue("bench")
    body = json.dumps({"job_id": "0" * 32, "pad": "x" * 400}).encode()

    async def publish_all() -> None:
        async def publisher(n: int) -> None:
            for i in range(n, messages, publishers):
                await broker.publish("bench", body, message_id=str(i))

        await asyncio.gather(*(publisher(n) for n in range(publishers)))

    publish_s = await _timed(publish_all)
    done = asyncio.Event()
    seen = 0

    async def handler(_: Delivery) -> None:
        nonlocal seen
        seen += 1
        if seen == messages:
            done.set()

    consume_s = await _timed(lambda: _consume(broker, queue, handler, done))
    serial_s = await _timed(lambda: _serial(broker, body, min(messages, 500)))
    await broker.close()
    return {
        "publish_per_s": _rate(messages, publish_s),
        "consume_ack_per_s": _rate(messages, consume_s),
        "serial_publish_per_s": _rate(min(messages, 500), serial_s),
        "messages": messages,
        "publishers": publishers,
    }


async def _consume(broker: EmbeddedBroker, queue: str, handler: Any, done: asyncio.Event) -> None:
    consumer = await broker.consume(queue, handler, prefetch=32)
    await done.wait()
    await consumer.stop(grace=5)


async def _serial(broker: EmbeddedBroker, body: bytes, count: int) -> None:
    await broker.declare_work_queue("serial")
    for i in range(count):
        await broker.publish("serial", body, message_id=str(i))


async def bench_objects(root: Path, count: int) -> dict[str, Any]:
    store = LocalStore(root / "objects")
    await store.connect()
    await store.ensure_bucket("bench")
    data = os.urandom(256 * 1024)

    async def puts() -> None:
        for i in range(count):
            await store.put_bytes("bench", f"jobs/{i}/out.png", data, content_type="image/png")

    async def gets() -> None:
        for i in range(count):
            await store.get_bytes("bench", f"jobs/{i}/out.png")

    put_s, get_s = await _timed(puts), await _timed(gets)
    return {"put_256k_per_s": _rate(count, put_s), "get_256k_per_s": _rate(count, get_s)}


async def bench_provenance(root: Path, count: int) -> dict[str, Any]:
    store = SqliteProvenanceStore(root / "provenance", "provenance")
    await store.connect()

    async def writes() -> None:
        for i in range(count):
            await store.put(f"doc-{i}", {"job_id": f"{i // 4:032x}", "kind": "step.completed",
                                         "input": {"sha256": f"{i:064x}"}})

    async def finds() -> None:
        for i in range(count // 4):
            assert len(await store.find({"job_id": f"{i:032x}"})) == 4

    write_s, find_s = await _timed(writes), await _timed(finds)
    await store.close()
    return {"put_per_s": _rate(count, write_s), "find_by_job_per_s": _rate(count // 4, find_s)}


def _png() -> bytes:
    x = pyvips.Image.xyz(320, 240)
    data: bytes = (x[0] * 255 / 319).bandjoin([x[1], x[0]]).cast("uchar").write_to_buffer(".png")
    return data


async def _submit(api: Client, png: bytes, count: int) -> list[str]:
    jobs = await api.upload_files([(f"b{i}.png", png) for i in range(count)],
                                  pipelines=["resize:w=64/format:png"])
    return [j["job_id"] for j in jobs]


async def _wait_done(session: aiohttp.ClientSession, url: str, jobs: list[str],
                     accepted: dict[str, float], latency: dict[str, float]) -> None:
    pending = set(jobs)
    while pending:
        for job in list(pending):
            async with session.get(f"{url}/jobs/{job}") as resp:
                status = (await resp.json())["status"]
            if status == "failed":
                raise RuntimeError(f"job {job} failed")
            if status == "done":
                latency[job] = time.perf_counter() - accepted[job]
                pending.discard(job)
        await asyncio.sleep(0.02)


KEEP_SERVERS = False


async def _start_dev(data: Path, port: int, logs: Path) -> tuple[DevProcess, float]:
    """`imgpipe dev` on embedded backends (or, with --servers, on those the environment
    names) and the seconds until it said where to open the page."""
    env = {k: v for k, v in os.environ.items() if KEEP_SERVERS and k.startswith(BACKENDS)}
    dev = DevProcess(env | {"LOG_LEVEL": "WARNING"}, data, logs, embedded=not KEEP_SERVERS)
    dev.port = port
    start = time.perf_counter()
    dev.start()
    await dev.wait_ready()
    return dev, time.perf_counter() - start


async def bench_dev(root: Path, jobs: int, batch: int, port: int) -> dict[str, Any]:
    png = _png()
    dev, startup = await _start_dev(root / "dev", port, root / "logs-1")
    url = dev.upload_url
    accepted: dict[str, float] = {}
    latency: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session, Client(url) as api:
            start = time.perf_counter()
            waits = []
            for _ in range(0, jobs, batch):
                ids = await _submit(api, png, batch)
                now = time.perf_counter()
                accepted.update({j: now for j in ids})
                waits.append(asyncio.create_task(_wait_done(session, url, ids, accepted, latency)))
            await asyncio.gather(*waits)
            elapsed = time.perf_counter() - start
    finally:
        dev.stop(timeout=60)
    lat = sorted(latency.values())
    result = {
        "startup_s": round(startup, 2),
        "jobs": len(lat),
        "jobs_per_s": _rate(len(lat), elapsed),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
    }
    if not KEEP_SERVERS:
        result |= await _bench_restart(root, jobs, batch, port, png)
    return result


async def _bench_restart(root: Path, jobs: int, batch: int, port: int, png: bytes) -> dict[str, Any]:
    """Accept jobs with only the upload service running, then start `imgpipe dev`."""
    from imgpipe.runtime.config import load
    from imgpipe.runtime.fileurl import embedded_url
    from imgpipe.upload.service import run_upload
    from imgpipe.upload.settings import UploadSettings

    data = root / "restart"
    settings = load(UploadSettings, upload_port=port, amqp_url=embedded_url(data / "broker"),
                    s3_url=embedded_url(data / "objects"),
                    couchdb_url=embedded_url(data / "provenance"), log_level="WARNING")
    stop = asyncio.Event()
    task = asyncio.create_task(run_upload(settings, stop=stop))
    url = f"http://127.0.0.1:{port}"
    ids: list[str] = []
    await wait_answering(f"{url}/readyz")
    async with Client(url) as api:
        for _ in range(0, jobs, batch):
            ids += await _submit(api, png, batch)
    stop.set()
    await task
    start = time.perf_counter()
    dev, _ = await _start_dev(data, port, root / "logs-2")
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_done(session, url, ids, dict.fromkeys(ids, start), {})
    finally:
        dev.stop(timeout=60)
    return {"restart_pending_jobs": len(ids),
            "restart_to_all_done_s": round(time.perf_counter() - start, 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small counts, for the test suite")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--servers", action="store_true",
                        help="run `imgpipe dev` on the servers named by AMQP_URL, S3_URL, "
                        "COUCHDB_URL in the environment (no restart part)")
    args = parser.parse_args()
    global KEEP_SERVERS
    KEEP_SERVERS = args.servers
    if args.smoke:
        args.messages, args.jobs, args.batch = 200, 10, 5
    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-") as tmp:
        root = Path(tmp)
        report = {
            "broker": await bench_broker(root, args.messages, args.publishers),
            "objects": await bench_objects(root, max(args.messages // 25, 20)),
            "provenance": await bench_provenance(root, max(args.messages // 5, 40)),
            "dev": await bench_dev(root, args.jobs, args.batch, args.port),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
