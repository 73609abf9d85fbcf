"""Benchmark imageproc: the same pipelines in-process and through POST /process.

    .venv/bin/python bench/imageproc.py            # full sizes (6000x4000 JPEG, 2000x1500 PNG)
    .venv/bin/python bench/imageproc.py --smoke    # tiny sizes, seconds; run by the test suite

For each case it reports (a) throughput of ``imgpipe.imageproc.engine.process``
called in-process from as many threads as the service has workers, (b) the
throughput of the ``imgpipe imageproc`` service (a separate process, same
worker count) driven by concurrent HTTP clients, the ratio b/a, and the
service's peak resident memory (VmHWM). Modes alternate for ``--rounds``
rounds and the best throughput of each is kept, so that load from other
processes on the machine skews both sides alike. Only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.engine import process, vips_version
from imgpipe.imageproc.safety import Limits, configure_vips
from imgpipe.testing.names import run_name
from imgpipe.testing.processes import ServiceProcesses


@dataclass
class Case:
    name: str
    pipeline: str
    data: bytes
    input: str


@dataclass
class Row:
    case: str
    pipeline: str
    input: str
    output_bytes: int
    requests: int
    inprocess_per_s: float
    http_per_s: float
    ratio: float


def photo(width: int, height: int) -> pyvips.Image:
    """A photo-like test image: smooth gradients plus grain, so codecs work as on photos."""
    xyz = pyvips.Image.xyz(width, height)
    r = xyz[0] * 255 / width
    g = xyz[1] * 255 / height
    b = ((xyz[0] + xyz[1]) * 0.05).sin() * 100 + 128
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, mean=0)
    image = r.bandjoin([g, b]) + noise
    return image.cast("uchar").copy(interpretation="srgb")


def make_cases(smoke: bool) -> list[Case]:
    big = (600, 400) if smoke else (6000, 4000)
    mid = (200, 150) if smoke else (2000, 1500)
    width = 80 if smoke else 800
    jpeg = bytes(photo(*big).jpegsave_buffer(Q=90))
    png = bytes(photo(*mid).pngsave_buffer(compression=6))
    return [
        Case("thumbnail-jpeg", f"resize:w={width}/format:jpeg,q=80", jpeg, f"{big[0]}x{big[1]} JPEG"),
        Case("thumbnail-webp", f"resize:w={width}/format:webp", jpeg, f"{big[0]}x{big[1]} JPEG"),
        Case("dither-png", "dither/format:png", png, f"{mid[0]}x{mid[1]} PNG"),
    ]


def in_process(case: Case, requests: int, workers: int) -> tuple[float, int]:
    pipeline = parse_pipeline(case.pipeline)
    limits = Limits(max_pixels=100_000_000, max_bytes=200 * 1024 * 1024)

    def one(_: int) -> int:
        # the same time-limit guard the service installs on every request
        return len(process(case.data, pipeline, limits, deadline=time.monotonic() + 600).data)

    size = one(0)
    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, size


async def over_http(base: str, case: Case, requests: int, clients: int) -> float:
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.post(
                f"{base}/process", params={"pipeline": case.pipeline}, data=case.data
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{case.name}: {resp.status} {body[:200]!r}")

        await one()
        queue = list(range(requests))

        async def client() -> None:
            while queue:
                queue.pop()
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return requests / (time.perf_counter() - started)


def start_service(logs: Path, workers: int, clients: int) -> ServiceProcesses:
    """``imgpipe imageproc`` alone, as a process of its own."""
    service = ServiceProcesses(run_name("b"), {}, logs, env={
        "IMAGEPROC_HOST": "127.0.0.1",
        "IMAGEPROC_WORKERS": str(workers),
        "IMAGEPROC_QUEUE": str(clients * 2),
        "IMAGEPROC_MAX_PIXELS": "100000000",
        "IMAGEPROC_MAX_BYTES": str(200 * 1024 * 1024),
        "LOG_LEVEL": "warning",
    })
    service.start("imageproc")
    return service


def run(
    smoke: bool, requests: int, workers: int, clients: int, rounds: int = 2
) -> dict[str, object]:
    configure_vips()
    load_before = os.getloadavg()[0]
    cases = make_cases(smoke)
    logs = tempfile.TemporaryDirectory(prefix="imgpipe-bench-")
    service = start_service(Path(logs.name), workers, clients)
    base = service.url("imageproc")
    rows: list[Row] = []
    try:
        asyncio.run(service.wait_ready())
        for case in cases:
            a = b = 0.0
            for _ in range(rounds):
                rate, size = in_process(case, requests, workers)
                a = max(a, rate)
                b = max(b, asyncio.run(over_http(base, case, requests, clients)))
            rows.append(
                Row(case.name, case.pipeline, case.input, size, requests, a, b, b / a)
            )
        rss = harness.peak_rss_mb(service.pids()["imageproc"])
    finally:
        service.stop_all(timeout=30)
        logs.cleanup()
    return {
        "libvips": vips_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "workers": workers,
        "clients": clients,
        "smoke": smoke,
        "rounds": rounds,
        "service_peak_rss_mb": round(rss, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "rows": [asdict(r) for r in rows],
    }


def table(report: dict[str, object]) -> str:
    rows = report["rows"]
    assert isinstance(rows, list)
    lines = [
        "| case | input | output bytes | in-process/s (a) | HTTP/s (b) | b/a |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} `{r['pipeline']}` | {r['input']} | {r['output_bytes']} "
            f"| {r['inprocess_per_s']:.2f} | {r['http_per_s']:.2f} | {r['ratio']:.2f} |"
        )
    lines.append(
        f"\nlibvips {report['libvips']}, Python {report['python']}, {report['cpus']} CPUs, "
        f"{report['workers']} workers, {report['clients']} HTTP clients, "
        f"service peak RSS {report['service_peak_rss_mb']} MB, "
        f"load average {report['load_average_before']} before, {report['load_average_after']} after"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny images, few requests")
    parser.add_argument("--requests", type=int, default=None, help="requests per case and mode")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--clients", type=int, default=None, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=2, help="alternating a/b rounds; best kept")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    requests = args.requests or (4 if args.smoke else 40)
    clients = args.clients or 2 * args.workers
    report = run(args.smoke, requests, args.workers, clients, args.rounds)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
