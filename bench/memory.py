"""Memory benchmark of imgpipe's services: streamed uploads, huge images, long runs.

    .venv/bin/python bench/memory.py                   # all cases, full sizes
    .venv/bin/python bench/memory.py --smoke           # tiny sizes, seconds; run by the tests
    .venv/bin/python bench/memory.py --cases jobs --allocators default,arena2,jemalloc

Cases (each on real servers started for the run, services as processes):

* ``upload``: one file of ``--upload-mb`` (1024) MB streamed through
  ``POST /upload`` (multipart, chunked) into S3: growth of the upload
  service's RSS (peak during the upload minus RSS before it). Goal <= 64 MB.
* ``thumbnail``: a ``--side`` (10000) pixel square JPEG through imageproc's
  ``POST /process`` (thumbnail and web presets): imageproc's peak RSS.
  Goal <= 400 MB.
* ``jobs``: ``--jobs`` (1000) jobs through the whole system, mixed sizes
  and pipelines: each service's RSS after 100 jobs and after all of them,
  once per allocator: the services as they ship (``default``: imageproc caps
  glibc's arenas at 2 itself), glibc's own default of 8 arenas per core
  (``glibc``), ``MALLOC_ARENA_MAX=2`` for every service (``arena2``) and
  jemalloc through ``LD_PRELOAD`` (``jemalloc``; Debian's ``libjemalloc2``).
  Goal: flat.

Peak RSS is the kernel's ``VmHWM``, reset (``/proc/PID/clear_refs``) right
before the measured step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.payload import AsyncIterablePayload

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Servers, Stack, Watcher

from imgpipe.client.api import Client

ALLOCATORS: dict[str, dict[str, str]] = {
    "default": {},
    "glibc": {"MALLOC_ARENA_MAX": str(8 * (os.cpu_count() or 1))},
    "arena2": {"MALLOC_ARENA_MAX": "2"},
    "jemalloc": {"LD_PRELOAD": str(harness.JEMALLOC)},
}
CHECKPOINT = 100


def big_jpeg(side: int) -> bytes:
    """A photo-like ``side`` x ``side`` JPEG, cached under ``.cache/bench``."""
    path = harness.CACHE / f"square-{side}.jpg"
    if not path.exists():
        import pyvips

        path.parent.mkdir(parents=True, exist_ok=True)
        tile = harness._base(min(side, 2500), min(side, 2500), 5)
        image = tile.replicate(-(-side // tile.width), -(-side // tile.height)).crop(0, 0, side, side)
        noise = pyvips.Image.gaussnoise(side, side, sigma=6, seed=9)
        (image + noise).cast("uchar").copy(interpretation="srgb").jpegsave(
            str(path.with_suffix(".tmp.jpg")), Q=85)
        path.with_suffix(".tmp.jpg").rename(path)
    return path.read_bytes()


async def case_upload(servers: Servers, logs: Path, megabytes: int) -> dict[str, Any]:
    """Stream ``megabytes`` MB of one 'image' through the upload service."""
    limit = (megabytes + 16) * 1024 * 1024
    stack = Stack(servers, logs / "upload", env={"UPLOAD_MAX_BYTES": str(limit)})
    proc = stack.start("upload-server")
    try:
        await stack.wait_ready()
        head = harness.image_set(1, (0.05, 0.05), 0.0)[0].data
        block = os.urandom(1024 * 1024)

        async def body(total: int) -> AsyncIterator[bytes]:
            yield head
            sent = len(head)
            while sent < total:
                piece = block[: min(len(block), total - sent)]
                sent += len(piece)
                yield piece

        async with harness.http_session() as session:
            async def send(total: int) -> dict[str, Any]:
                writer = aiohttp.MultipartWriter("form-data")
                part = writer.append_payload(AsyncIterablePayload(body(total)))
                part.set_content_disposition("form-data", name="file", filename="big.jpg")
                async with session.post(f"{stack.url('upload-server')}/upload", data=writer) as resp:
                    answer = await resp.json()
                    if resp.status != 202:
                        raise RuntimeError(f"upload answered {resp.status}: {answer}")
                    return dict(answer["jobs"][0])

            await send(2 * 1024 * 1024)
            before = harness.rss_mb(proc.pid)
            harness.reset_peak_rss(proc.pid)
            started = time.perf_counter()
            job = await send(megabytes * 1024 * 1024)
            seconds = time.perf_counter() - started
            peak = harness.peak_rss_mb(proc.pid)
            after = harness.rss_mb(proc.pid)
        return {"case": "upload", "megabytes": megabytes, "stored_bytes": job["size"],
                "seconds": seconds, "mb_per_s": megabytes / seconds,
                "rss_before_mb": before, "peak_rss_mb": peak, "rss_after_mb": after,
                "growth_mb": peak - before}
    finally:
        stack.stop_all()
        await stack.remove_names()


async def case_thumbnail(servers: Servers, logs: Path, side: int) -> dict[str, Any]:
    """One huge JPEG through imageproc alone, per pipeline."""
    data = big_jpeg(side)
    stack = Stack(servers, logs / "thumbnail", env={
        "IMAGEPROC_MAX_PIXELS": str(max(side * side, 50_000_000)),
        "IMAGEPROC_MAX_BYTES": str(max(len(data) + 1, 50 * 1024 * 1024))})
    proc = stack.start("imageproc")
    rows = []
    try:
        await stack.wait_ready()
        async with harness.http_session() as session:
            for pipeline in ("thumbnail", "web"):
                before = harness.rss_mb(proc.pid)
                harness.reset_peak_rss(proc.pid)
                started = time.perf_counter()
                async with session.post(f"{stack.url('imageproc')}/process",
                                        params={"pipeline": pipeline}, data=data) as resp:
                    out = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"imageproc answered {resp.status}: {out[:300]!r}")
                rows.append({"case": "thumbnail", "pipeline": pipeline, "side": side,
                             "input_mb": len(data) / 1e6, "output_bytes": len(out),
                             "seconds": time.perf_counter() - started, "rss_before_mb": before,
                             "peak_rss_mb": harness.peak_rss_mb(proc.pid),
                             "rss_after_mb": harness.rss_mb(proc.pid)})
        return {"case": "thumbnail", "rows": rows}
    finally:
        stack.stop_all()
        await stack.remove_names()


async def case_jobs(servers: Servers, logs: Path, jobs: int, allocator: str,
                    images: list[harness.Image], runners: int) -> dict[str, Any]:
    """``jobs`` jobs through the whole system; RSS of each service along the way."""
    stack = Stack(servers, logs / f"jobs-{allocator}", env=ALLOCATORS[allocator])
    watcher = Watcher(stack)
    pipelines = ("thumbnail", "web")
    try:
        for service in ("imageproc", "provenance", "upload-server"):
            stack.start(service)
        await stack.wait_ready()
        for i in range(runners):
            stack.start("runner", key=f"runner-{i + 1}")
        await stack.wait_ready()
        await watcher.start()
        series: list[dict[str, Any]] = []
        done = 0
        step = min(CHECKPOINT, jobs) if jobs >= CHECKPOINT else max(1, jobs // 2)
        base = stack.url("upload-server")
        started = time.perf_counter()
        async with Client(base, timeout=600) as api:
            while done < jobs:
                batch = [images[(done + i) % len(images)] for i in range(min(step, jobs - done))]
                sent: dict[str, tuple[float, float]] = {}
                for pipeline in pipelines:
                    chosen = batch[pipelines.index(pipeline)::len(pipelines)]
                    sent |= await harness.upload_all(api, chosen, 4, pipeline)
                await watcher.wait(list(sent), timeout=max(120.0, 3.0 * len(batch)))
                done += len(batch)
                series.append({"jobs": done, "rss_mb": {k: harness.rss_mb(p)
                                                        for k, p in stack.pids().items()}})
        first = series[0]
        last = series[-1]
        return {"case": "jobs", "allocator": allocator, "jobs": jobs, "runners": runners,
                "seconds": time.perf_counter() - started,
                "failed": len(watcher.failed),
                "after_first_mb": first["rss_mb"], "after_all_mb": last["rss_mb"],
                "first_checkpoint": first["jobs"],
                "growth_mb": {k: last["rss_mb"][k] - first["rss_mb"][k] for k in last["rss_mb"]},
                "peak_rss_mb": {k: harness.peak_rss_mb(p) for k, p in stack.pids().items()},
                "series": series}
    finally:
        await watcher.close()
        stack.stop_all()
        await stack.remove_names()


def tables(report: dict[str, Any]) -> str:
    lines: list[str] = []
    uploads = [r for r in report["results"] if r["case"] == "upload"]
    if uploads:
        growth = harness.median([r["growth_mb"] for r in uploads])
        lines += [
            "| upload of | runs | RSS before | peak RSS | growth (median) | MB/s (median) |",
            "|---|---:|---:|---:|---:|---:|",
            (f"| {uploads[0]['megabytes']} MB | {len(uploads)} | "
             f"{harness.median([r['rss_before_mb'] for r in uploads]):.0f} MB | "
             f"{harness.median([r['peak_rss_mb'] for r in uploads]):.0f} MB | {growth:.0f} MB | "
             f"{harness.median([r['mb_per_s'] for r in uploads]):.0f} |"), ""]
    thumbs = [row for r in report["results"] if r["case"] == "thumbnail" for row in r["rows"]]
    if thumbs:
        lines += ["| imageproc input | pipeline | runs | RSS before | peak RSS (median) | seconds |",
                  "|---|---|---:|---:|---:|---:|"]
        for pipeline in dict.fromkeys(row["pipeline"] for row in thumbs):
            rows = [row for row in thumbs if row["pipeline"] == pipeline]
            lines.append(
                f"| {rows[0]['side']}x{rows[0]['side']} JPEG ({rows[0]['input_mb']:.0f} MB) | "
                f"{pipeline} | {len(rows)} | "
                f"{harness.median([r['rss_before_mb'] for r in rows]):.0f} MB | "
                f"{harness.median([r['peak_rss_mb'] for r in rows]):.0f} MB | "
                f"{harness.median([r['seconds'] for r in rows]):.2f} |")
        lines.append("")
    jobs = [r for r in report["results"] if r["case"] == "jobs"]
    if jobs:
        keys = list(jobs[0]["after_all_mb"])
        lines += ["| allocator | " + " | ".join(f"{k} after {jobs[0]['first_checkpoint']} / "
                                                 f"{jobs[0]['jobs']} jobs" for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for r in jobs:
            cells = [f"{r['after_first_mb'][k]:.0f} / {r['after_all_mb'][k]:.0f} MB "
                     f"({r['growth_mb'][k]:+.0f})" for k in keys]
            lines.append(f"| {r['allocator']} | " + " | ".join(cells) + " |")
        lines.append("")
    m = report["machine"]
    lines.append(f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
                 f"{m['python']}, libvips {m['libvips']}, {m['date']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--cases", default="upload,thumbnail,jobs")
    parser.add_argument("--upload-mb", type=int, default=None, help="upload size (default 1024)")
    parser.add_argument("--side", type=int, default=None, help="JPEG side (default 10000)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs of the long run (1000)")
    parser.add_argument("--runners", type=int, default=2, help="runner processes (jobs case)")
    parser.add_argument("--allocators", default=None,
                        help="comma-separated: default, glibc, arena2, jemalloc (all that exist)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of upload and thumbnail")
    parser.add_argument("--external", action="store_true",
                        help="use the servers named by AMQP_URL, S3_*, COUCHDB_*")
    parser.add_argument("--shared-broker", action="store_true",
                        help="use the RabbitMQ on 127.0.0.1:5672 instead of a private one")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)

    smoke = args.smoke
    upload_mb = args.upload_mb or (8 if smoke else 1024)
    side = args.side or (1200 if smoke else 10000)
    jobs = args.jobs or (4 if smoke else 1000)
    repeat = 1 if smoke else args.repeat
    allocators = (args.allocators or ("default" if smoke else ",".join(
        a for a in ALLOCATORS if a != "jemalloc" or harness.JEMALLOC.exists()))).split(",")
    for name in allocators:
        if name not in ALLOCATORS:
            parser.error(f"unknown allocator {name!r}")
        if name == "jemalloc" and not harness.JEMALLOC.exists():
            parser.error(f"{harness.JEMALLOC} is missing: apt-get install libjemalloc2")
    cases = args.cases.split(",")
    images = harness.image_set(*(((6, (0.1, 0.3), 0.34)) if smoke else (48, (0.5, 8.0), 0.15)),
                               png_megapixels=(0.05, 0.1) if smoke else (0.5, 3.0))
    report: dict[str, Any] = {"benchmark": "memory", "machine": harness.machine(),
                              "smoke": smoke, "results": []}
    with harness.servers_for(args.external, args.shared_broker) as (servers, *_), \
            tempfile.TemporaryDirectory(prefix="imgpipe-bench-logs-") as logs:
        for r in range(repeat if {"upload", "thumbnail"} & set(cases) else 0):
            if "upload" in cases:
                report["results"].append(asyncio.run(case_upload(servers, Path(logs), upload_mb)))
            if "thumbnail" in cases:
                report["results"].append(asyncio.run(case_thumbnail(servers, Path(logs), side)))
            print(f"repeat {r + 1}/{repeat} done", file=sys.stderr)
        if "jobs" in cases:
            for allocator in allocators:
                result = asyncio.run(case_jobs(servers, Path(logs), jobs, allocator, images,
                                               args.runners))
                report["results"].append(result)
                print(f"jobs with {allocator}: {result['growth_mb']}", file=sys.stderr)
    return harness.finish(report, args.out, args.json, tables)


if __name__ == "__main__":
    sys.exit(main())
