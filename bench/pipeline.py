"""End-to-end benchmark of imgpipe: throughput, latency, memory and scaling.

    .venv/bin/python bench/pipeline.py                      # full run (see --help)
    .venv/bin/python bench/pipeline.py --smoke              # tiny, seconds; run by the tests
    .venv/bin/python bench/pipeline.py --configs 2x2 --repeat 1 --pipeline web
    .venv/bin/python bench/pipeline.py --case small         # 400 small JPEGs: per-job overhead

A fixed, generated image set is uploaded by concurrent clients through the
whole system (upload -> RabbitMQ -> runner -> imageproc -> S3, provenance ->
CouchDB) on real servers started for the run. For each configuration
``RxW`` (R runner processes, W imageproc worker threads) it reports:

* throughput: images / (last output stored - first upload sent) for a burst
  of every image at once, and the ratio to the in-process limit: the same
  images and pipeline through :func:`imgpipe.imageproc.engine.process`
  (pyvips) in as many threads as the machine has cores, measured in the same
  run, just before;
* latency from upload sent to output in S3 and to provenance stored (p50,
  p95, p99), in the burst (queueing included) and paced at half the burst
  throughput (the pipeline's own latency);
* peak RSS of each service and CPU seconds per image of every process.

Each repeat runs the in-process limit and then every configuration; the
report gives medians over repeats, and ratios computed within one repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from harness import Image, Servers, Stack, Watcher

from imgpipe.client.api import Client


@dataclass(frozen=True)
class Config:
    runners: int
    workers: int
    variant: str = ""
    env: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.runners}x{self.workers}" + (f" {self.variant}" if self.variant else "")

    @classmethod
    def parse(cls, text: str) -> Config:
        runners, _, workers = text.partition("x")
        return cls(int(runners), int(workers or 2))

    def with_variant(self, text: str) -> Config:
        """``NAME`` or ``NAME:VAR=VALUE,VAR=VALUE``: the same configuration with extra env."""
        name, _, assignments = text.partition(":")
        env = tuple(tuple(a.split("=", 1)) for a in assignments.split(",") if a)
        return Config(self.runners, self.workers, name, env)  # type: ignore[arg-type]

    def on(self, servers: Servers, named: bool) -> Config:
        """The same configuration, labelled with the CouchDB it runs on when ``named``."""
        if not named:
            return self
        variant = " ".join(filter(None, (self.variant, servers.couchdb)))
        return Config(self.runners, self.workers, variant, self.env)


def in_process(images: list[Image], spec: str, threads: int) -> dict[str, float]:
    """The limit: every image through the engine in ``threads`` threads, nothing else."""
    from imgpipe.domain.pipeline import parse_pipeline
    from imgpipe.imageproc.engine import process
    from imgpipe.imageproc.safety import Limits, configure_vips

    configure_vips()
    pipeline = parse_pipeline(spec)
    limits = Limits()
    process(images[0].data, pipeline, limits)
    cpu = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(lambda image: process(image.data, pipeline, limits), images))
        elapsed = time.perf_counter() - started
    return {"images_per_s": len(images) / elapsed, "seconds": elapsed,
            "cpu_s_per_image": (time.process_time() - cpu) / len(images)}


def latency_summary(jobs: dict[str, tuple[float, float]], watcher: Watcher) -> dict[str, float]:
    to_output = [watcher.output_at[j] - sent for j, (sent, _) in jobs.items()
                 if j in watcher.output_at]
    to_prov = [watcher.provenance_at[j] - sent for j, (sent, _) in jobs.items()
               if j in watcher.provenance_at]
    accepted = [done - sent for sent, done in jobs.values()]
    out: dict[str, float] = {}
    for name, values in (("output", to_output), ("provenance", to_prov), ("accepted", accepted)):
        for q in (50, 95, 99):
            out[f"{name}_p{q}_ms"] = harness.percentile(values, q) * 1000
    return out


async def paced(api: Client, images: list[Image], rate: float,
                pipeline: str | None) -> dict[str, tuple[float, float]]:
    """Upload ``images`` one at a time at ``rate`` per second (open loop)."""
    jobs: dict[str, tuple[float, float]] = {}
    start = time.perf_counter()
    tasks = []
    for i, image in enumerate(images):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(harness.upload_all(api, [image], 1, pipeline)))
    for done in await asyncio.gather(*tasks):
        jobs.update(done)
    return jobs


async def end_to_end(servers: Servers, images: list[Image], config: Config, *, clients: int,
                     pipeline: str | None, warmup: int, paced_count: int, logs: Path,
                     env: dict[str, str], profile: Path | None = None) -> dict[str, Any]:
    """One configuration: start the services, warm up, burst, pace, read /proc, stop."""
    stack = Stack(servers, logs / config.label,
                  env={"IMAGEPROC_WORKERS": str(config.workers), **env, **dict(config.env)})
    watcher = Watcher(stack)
    try:
        for service in ("imageproc", "provenance", "upload-server"):
            stack.start(service)
        await stack.wait_ready()
        for i in range(config.runners):
            stack.start("runner", key=f"runner-{i + 1}")
        await stack.wait_ready()
        await watcher.start()
        base = stack.url("upload-server")
        async with Client(base, timeout=600) as api:
            warm = await harness.upload_all(api, images[:warmup], clients, pipeline)
            await watcher.wait(list(warm), timeout=120)
            pids = stack.pids() | dict(servers.pids)
            cpu_before = {k: harness.cpu_seconds(p) for k, p in pids.items()}
            client_cpu = time.process_time()
            profilers = harness.start_profilers(stack, profile / config.label) if profile else []
            jobs = await harness.upload_all(api, images, clients, pipeline)
            await watcher.wait(list(jobs), timeout=max(120.0, 3.0 * len(images)))
            harness.stop_profilers(profilers)
            first = min(sent for sent, _ in jobs.values())
            last = max(watcher.output_at[j] for j in jobs if j in watcher.output_at)
            cpu = {k: (harness.cpu_seconds(p) - cpu_before[k]) / len(images)
                   for k, p in pids.items()}
            cpu["benchmark client"] = (time.process_time() - client_cpu) / len(images)
            result: dict[str, Any] = {
                "config": config.label,
                "runners": config.runners,
                "workers": config.workers,
                "images": len(images),
                "failed": len([j for j in jobs if j in watcher.failed]),
                "images_per_s": len(jobs) / (last - first),
                "burst": latency_summary(jobs, watcher),
                "cpu_s_per_image": cpu,
            }
            if paced_count:
                rate = result["images_per_s"] / 2
                subset = images[:paced_count]
                slow = await paced(api, subset, rate, pipeline)
                await watcher.wait(list(slow), timeout=max(120.0, 3.0 * len(subset)))
                result["paced"] = {"rate_per_s": rate, **latency_summary(slow, watcher)}
        result["peak_rss_mb"] = {k: harness.peak_rss_mb(p) for k, p in stack.pids().items()}
        return result
    finally:
        await watcher.close()
        stack.stop_all()
        await stack.remove_names()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats per configuration; ratios taken inside each repeat."""
    summary: dict[str, Any] = {"in_process": {}, "configs": {}}
    limits = [r["in_process"] for r in runs]
    summary["in_process"] = {k: harness.median([x[k] for x in limits]) for k in limits[0]}
    labels = [c["config"] for c in runs[0]["configs"]]
    for label in labels:
        rows = [c for r in runs for c in r["configs"] if c["config"] == label]
        ratios = [c["images_per_s"] / r["in_process"]["images_per_s"]
                  for r in runs for c in r["configs"] if c["config"] == label]
        merged: dict[str, Any] = {
            "images_per_s": harness.median([c["images_per_s"] for c in rows]),
            "ratio_to_in_process": harness.median(ratios),
            "ratios": ratios,
            "cpu_ratio_to_in_process": harness.median([
                r["in_process"]["cpu_s_per_image"] / sum(
                    v for k, v in c["cpu_s_per_image"].items() if k != "benchmark client")
                for r in runs for c in r["configs"] if c["config"] == label]),
            "failed": sum(c["failed"] for c in rows),
        }
        for part in ("burst", "paced", "cpu_s_per_image", "peak_rss_mb"):
            if part in rows[0]:
                merged[part] = {k: harness.median([c[part][k] for c in rows if k in c[part]])
                                for k in rows[0][part]}
        summary["configs"][label] = merged
    return summary


def table(report: dict[str, Any]) -> str:
    s = report["summary"]
    limit = s["in_process"]["images_per_s"]
    lines = [
        (f"in-process limit ({report['threads']} threads): {limit:.1f} images/s, "
         f"{s['in_process']['cpu_s_per_image'] * 1000:.0f} ms CPU per image"),
        "",
        ("| runners x imageproc workers | images/s | ratio to in-process | CPU ratio "
         "| burst p50 / p95 / p99 to S3 (s) | paced p50 / p95 / p99 to S3 (ms) "
         "| paced p50 / p95 to provenance (ms) |"),
        "|---|---:|---:|---:|---|---|---|",
    ]
    for label, c in s["configs"].items():
        b, p = c["burst"], c.get("paced", {})
        paced_out = (f"{p['output_p50_ms']:.0f} / {p['output_p95_ms']:.0f} / "
                     f"{p['output_p99_ms']:.0f}") if p else "-"
        paced_prov = (f"{p['provenance_p50_ms']:.0f} / {p['provenance_p95_ms']:.0f}") if p else "-"
        lines.append(
            f"| {label} | {c['images_per_s']:.1f} | {c['ratio_to_in_process']:.2f} | "
            f"{c['cpu_ratio_to_in_process']:.2f} | "
            f"{b['output_p50_ms'] / 1000:.1f} / {b['output_p95_ms'] / 1000:.1f} / "
            f"{b['output_p99_ms'] / 1000:.1f} | {paced_out} | {paced_prov} |")
    services = list(dict.fromkeys(k for c in s["configs"].values() for k in c["peak_rss_mb"]))
    lines += ["", "| runners x workers | " + " | ".join(f"peak RSS {k}" for k in services) + " |",
              "|---|" + "---:|" * len(services)]
    for label, c in s["configs"].items():
        cells = [f"{c['peak_rss_mb'][k]:.0f} MB" if k in c["peak_rss_mb"] else "-"
                 for k in services]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "CPU ms per image (median over repeats):", ""]
    keys = sorted({k for c in s["configs"].values() for k in c["cpu_s_per_image"]})
    lines.append("| process | " + " | ".join(s["configs"]) + " |")
    lines.append("|---|" + "---:|" * len(s["configs"]))
    for key in keys:
        cells = [f"{c['cpu_s_per_image'][key] * 1000:.1f}" if key in c["cpu_s_per_image"]
                 else "-" for c in s["configs"].values()]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    totals = [sum(v for k, v in c["cpu_s_per_image"].items() if k != "benchmark client")
              for c in s["configs"].values()]
    lines.append("| **all but the client** | "
                 + " | ".join(f"{t * 1000:.1f}" for t in totals) + " |")
    m = report["machine"]
    lines += ["", (f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
                   f"Python {m['python']}, libvips {m['libvips']}, {m['date']}; "
                   f"load average before {m['load_average']}, "
                   f"after {report['load_average_after']}; {report['images']} images "
                   f"({report['input_mb']:.0f} MB), pipeline {report['pipeline']!r}, "
                   f"{report['clients']} upload clients, {report['repeat']} repeat(s)")]
    return "\n".join(lines)


CASES: dict[str, dict[str, Any]] = {
    "small": {"configs": "2x2", "repeat": 1, "images": 400, "megapixels": "0.02-0.08",
              "png_share": 0.0, "paced": 10},
}
"""Named cases: defaults for the options, each still overridable on the command line.
``small``: 400 JPEGs of 15 KB on average (plankton-imager crops), where the per-job
overhead of the services is all there is."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default=None,
                        help="a named case (its options are defaults the others override)")
    parser.add_argument("--show", type=Path, default=None, metavar="JSON",
                        help="print the tables of a report written by --out, run nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny images, one config, seconds")
    parser.add_argument("--images", type=int, default=None, help="images per run (default 120)")
    parser.add_argument("--megapixels", default="2-12", help="JPEG sizes, e.g. 2-12")
    parser.add_argument("--png-share", type=float, default=0.1, help="share of PNGs (1-4 MP)")
    parser.add_argument("--configs", default="1x2,2x2,4x2,2x1,2x4",
                        help="comma-separated RUNNERSxWORKERS (imageproc worker threads)")
    parser.add_argument("--pipeline", default="thumbnail", help="pipeline of every job")
    parser.add_argument("--clients", type=int, default=8, help="concurrent upload clients")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (medians are reported)")
    parser.add_argument("--paced", type=int, default=None,
                        help="images uploaded one by one at half the burst throughput (latency)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2,
                        help="threads of the in-process limit")
    parser.add_argument("--external", action="store_true",
                        help="use the servers named by AMQP_URL, S3_*, COUCHDB_* instead of "
                             "starting private ones")
    parser.add_argument("--couchdb", choices=("chosen", "both"), default="chosen",
                        help="both: every config on the CouchDB the settings choose and, "
                             "interleaved, on pouchdb-server (CPU side by side)")
    parser.add_argument("--shared-broker", action="store_true",
                        help="use the RabbitMQ on 127.0.0.1:5672 instead of a private one")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME[:VAR=VALUE,...]",
                        help="run every config once per variant, interleaved (A/B comparisons)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for every service (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record each service with py-spy during the burst (raw stacks in DIR)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.case:
        parser.set_defaults(**CASES[args.case])
        args = parser.parse_args(argv)
    if args.show:
        print(table(json.loads(args.show.read_text())))
        return 0

    if args.smoke:
        count, mp, pngs, configs = args.images or 6, (0.2, 0.5), 0.34, ["1x1"]
        paced_count, repeat, warmup = args.paced if args.paced is not None else 2, 1, 1
        png_mp = (0.1, 0.2)
    else:
        low, _, high = args.megapixels.partition("-")
        count, mp, pngs = args.images or 120, (float(low), float(high or low)), args.png_share
        configs = args.configs.split(",")
        paced_count = args.paced if args.paced is not None else 30
        repeat, warmup, png_mp = args.repeat, 4, (1.0, 4.0)
    images = harness.image_set(count, mp, pngs, png_megapixels=png_mp)
    env = dict(item.split("=", 1) for item in args.env)
    report: dict[str, Any] = {
        "benchmark": "pipeline", "machine": harness.machine(), "smoke": args.smoke,
        "images": len(images), "input_mb": sum(len(i.data) for i in images) / 1e6,
        "megapixels": [min(i.megapixels for i in images), max(i.megapixels for i in images)],
        "case": args.case, "pipeline": args.pipeline, "clients": args.clients, "repeat": repeat,
        "threads": args.threads, "env": env, "runs": [],
    }
    with harness.servers_for(args.external, args.shared_broker,
                             args.couchdb == "both") as server_sets, \
            tempfile.TemporaryDirectory(prefix="imgpipe-bench-logs-") as logs:
        for r in range(repeat):
            run: dict[str, Any] = {"in_process": in_process(images, args.pipeline, args.threads),
                                   "configs": []}
            for config, servers in [
                    (Config.parse(text).with_variant(v).on(s, len(server_sets) > 1), s)
                    for text in configs for v in args.variant or [""] for s in server_sets]:
                result = asyncio.run(end_to_end(
                    servers, images, config, clients=args.clients,
                    pipeline=args.pipeline,
                    warmup=warmup, paced_count=paced_count, logs=Path(logs) / f"run{r}", env=env,
                    profile=args.profile / f"run{r}" if args.profile else None))
                run["configs"].append(result)
                print(f"repeat {r + 1}/{repeat} {config.label}: {result['images_per_s']:.2f} images/s "
                      f"(in-process {run['in_process']['images_per_s']:.2f})", file=sys.stderr)
            report["runs"].append(run)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = summarize(report["runs"])
    return harness.finish(report, args.out, args.json, table)


if __name__ == "__main__":
    sys.exit(main())
