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
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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
    small = (80, 60) if smoke else (400, 300)
    width = 80 if smoke else 800
    jpeg = bytes(photo(*big).jpegsave_buffer(Q=90))
    png = bytes(photo(*mid).pngsave_buffer(compression=6))
    small_png = bytes(photo(*small).pngsave_buffer(compression=6))
    return [
        Case("thumbnail-jpeg", f"resize:w={width}/format:jpeg,q=80", jpeg, f"{big[0]}x{big[1]} JPEG"),
        Case("thumbnail-webp", f"resize:w={width}/format:webp", jpeg, f"{big[0]}x{big[1]} JPEG"),
        Case("dither-png", "dither/format:png", png, f"{mid[0]}x{mid[1]} PNG"),
        Case(
            "dither-colour", "dither:16,mono=false/format:png", small_png,
            f"{small[0]}x{small[1]} PNG",
        ),
    ]


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system seconds of process ``pid`` and its live children (helpers, forks)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        if int(fields[1]) == pid or stat.parent.name == str(pid):  # ppid, or pid itself
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


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
    service = ServiceProcesses(run_name("b"), {}, logs, env=service_env(workers, clients))
    service.start("imageproc")
    return service


def service_env(workers: int, clients: int) -> dict[str, str]:
    """The benchmark's imageproc settings."""
    return {
        "IMAGEPROC_HOST": "127.0.0.1",
        "IMAGEPROC_WORKERS": str(workers),
        "IMAGEPROC_QUEUE": str(clients * 2),
        "IMAGEPROC_MAX_PIXELS": "100000000",
        "IMAGEPROC_MAX_BYTES": str(200 * 1024 * 1024),
        "LOG_LEVEL": "warning",
    }


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


async def timed_http(base: str, case: Case, seconds: float, clients: int) -> int:
    """Requests answered by ``base`` from ``clients`` at once within ``seconds``."""
    done = 0
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            nonlocal done
            while time.monotonic() < end:
                async with session.post(
                    f"{base}/process", params={"pipeline": case.pipeline}, data=case.data
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{case.name}: {resp.status}")
                if time.monotonic() <= end:
                    done += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return done


def _drive(base: str, case: Case, seconds: float, clients: int) -> int:
    return asyncio.run(timed_http(base, case, seconds, clients))


def _together(
    services: dict[tuple[str, int], tuple[str, subprocess.Popen[bytes]]], case: Case,
    seconds: float,
) -> dict[tuple[str, int], int]:
    """Drive every service at once, each from a driver process of its own."""
    keys = list(services)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(keys), mp_context=context) as pool:
        futures = [pool.submit(_drive, services[k][0], case, seconds, 2 * k[1]) for k in keys]
        return {k: f.result() for k, f in zip(keys, futures, strict=True)}


def scaling(
    smoke: bool, requests: int, workers: int, rounds: int, names: list[str],
    variants: list[tuple[str, dict[str, str]]], together: float | None = None,
) -> dict[str, object]:
    """HTTP throughput of each case with 1 worker and with ``workers``, rounds interleaved.

    Each variant (a name and environment, e.g. ``PYTHONPATH`` of an older tree)
    gets its own pair of services; the best of ``rounds`` is kept for each, and
    the median CPU time per request of the service's processes (its diffusion
    helpers included). With ``together`` (seconds), every service is driven at
    the same time instead, for that long, each from a client process of its
    own, and the ratio is the median over rounds of the CPU time each service
    got in that window (the work it did, requests still in flight included):
    on a machine shared with other load the services then share the same
    conditions, and the scheduler's fair share gives a service with two busy
    threads twice the CPU of one with one, unless a lock (the GIL) keeps them
    from running at once.
    """
    configure_vips()
    cases = [c for c in make_cases(smoke) if not names or c.name in names]
    services: dict[tuple[str, int], tuple[str, subprocess.Popen[bytes]]] = {}
    best: dict[tuple[str, str, int], float] = {}
    cpu: dict[tuple[str, str, int], list[float]] = {}
    logs = tempfile.TemporaryDirectory(prefix="imgpipe-bench-")
    # in the caller's session: with the kernel's autogroup scheduling on, a session of
    # its own would give each service one share of the CPU however many threads it ran
    group = ServiceProcesses(run_name("s"), {}, Path(logs.name))
    try:
        for name, env in variants:
            for n in sorted({1, workers}):
                key = f"imageproc-{name}-{n}"
                proc = group.start("imageproc", key=key, **service_env(n, 2 * n), **env)
                services[name, n] = (group.url(key), proc)
        asyncio.run(group.wait_ready())
        ratios: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for case in cases:
                if together:
                    for name, n in services:
                        cpu.setdefault((case.name, name, n), [])
                    before_cpu = {k: cpu_seconds(p.pid) for k, (_, p) in services.items()}
                    counts = _together(services, case, together)
                    used = {k: cpu_seconds(p.pid) - before_cpu[k] for k, (_, p) in services.items()}
                    for (name, n), count in counts.items():
                        key = (case.name, name, n)
                        best[key] = max(best.get(key, 0.0), count / together)
                        cpu[key].append(1000 * used[name, n] / max(count, 1))
                    for name, _ in variants:
                        # CPU the service got in the same window: the work it did,
                        # counting requests still in flight at the end
                        ratios.setdefault((case.name, name), []).append(
                            used[name, workers] / max(used[name, 1], 1e-9)
                        )
                    continue
                for (name, n), (base, proc) in services.items():
                    before = cpu_seconds(proc.pid)
                    rate = asyncio.run(over_http(base, case, requests, 2 * n))
                    key = (case.name, name, n)
                    best[key] = max(best.get(key, 0.0), rate)
                    used = cpu_seconds(proc.pid) - before
                    cpu.setdefault(key, []).append(1000 * used / (requests + 1))
    finally:
        group.stop_all(timeout=30)
        logs.cleanup()
    rows = [
        {
            "case": case.name, "variant": name, "one_worker_per_s": best[case.name, name, 1],
            "workers": workers, "many_workers_per_s": best[case.name, name, workers],
            "ratio": (statistics.median(ratios[case.name, name]) if together
                      else best[case.name, name, workers] / best[case.name, name, 1]),
            "ratios": ratios.get((case.name, name)),
            "cpu_ms_one_worker": round(statistics.median(cpu[case.name, name, 1]), 1),
            "cpu_ms_many_workers": round(statistics.median(cpu[case.name, name, workers]), 1),
        }
        for case in cases for name, _ in variants
    ]
    return {"libvips": vips_version(), "cpus": os.cpu_count(), "rounds": rounds,
            "together_seconds": together, "rows": rows}


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


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition(":")
    env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return name, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny images, few requests")
    parser.add_argument("--requests", type=int, default=None, help="requests per case and mode")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--clients", type=int, default=None, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=2, help="alternating a/b rounds; best kept")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--scaling", default=None, metavar="CASES",
        help="comma-separated cases (e.g. dither-png): HTTP with 1 worker versus --workers",
    )
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME[:VAR=VALUE,...]",
        help="with --scaling: a service environment to compare (e.g. before:PYTHONPATH=/tmp/old/src)",
    )
    parser.add_argument(
        "--together", type=float, default=None, metavar="SECONDS",
        help="with --scaling: drive every service at once for SECONDS per round (shared machine)",
    )
    args = parser.parse_args(argv)
    requests = args.requests or (4 if args.smoke else 40)
    clients = args.clients or 2 * args.workers
    if args.scaling is not None:
        variants = [_variant(v) for v in args.variant] or [("current", {})]
        names = [n for n in args.scaling.split(",") if n]
        result = scaling(
            args.smoke, requests, args.workers, args.rounds, names, variants, args.together
        )
        print(json.dumps(result, indent=2))
        return 0
    report = run(args.smoke, requests, args.workers, clients, args.rounds)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
