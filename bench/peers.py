"""imageproc against its peers on one job: a 6000x4000 JPEG to an 800 px wide JPEG at q80.

    .venv/bin/python bench/peers.py --install          # once: thumbor and sharp into .cache/peers
    .venv/bin/python bench/peers.py --rounds 3         # ~5 min on 2 CPUs
    .venv/bin/python bench/peers.py --smoke            # tiny image, seconds

Contenders, each driven by ``--clients`` (4) concurrent requests at saturation:

* **imageproc** over HTTP (``imgpipe imageproc``, default settings: one worker
  per core, one libvips thread each), ``POST /process`` with the JPEG as body,
  once per JPEG ``effort`` asked (``--efforts``, default 0,1,2);
* **thumbor** 7.8 (Pillow) over HTTP, one process per core
  (``--processes N``), fetching the JPEG over loopback from this benchmark's
  own file server (its HTTP loader: the bytes cross a socket as they do for
  imageproc), default settings but no source storage, quality 80;
* **sharp** (Node, the same libvips) in-process: ``--clients`` promises at
  once on libuv's default thread pool and sharp's default concurrency.

Rounds interleave the contenders so the machine's other load skews them
alike; the best of the rounds is kept for each. Output bytes are reported
beside throughput. Only loopback is used. The peers live outside the project's
environment (``.cache/peers``): ``--install`` puts them there with pip and npm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imageproc import cpu_seconds, photo, start_service  # noqa: E402

from imgpipe.testing.processes import wait_answering  # noqa: E402
from imgpipe.testing.servers.base import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".cache" / "peers"
THUMBOR = PEERS / "thumbor" / "bin" / "thumbor"
SHARP = PEERS / "sharp"
THUMBOR_VERSION = "7.8.0"
SHARP_VERSION = "0.35"

SHARP_SCRIPT = r"""
const sharp = require(process.argv[1]);
const fs = require("fs");
const [file, width, quality, requests, clients] = process.argv.slice(2);
const input = fs.readFileSync(file);
const one = () => sharp(input).resize(+width).jpeg({ quality: +quality }).toBuffer();
(async () => {
  const size = (await one()).length;
  let left = +requests;
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: +clients }, async () => {
    while (left-- > 0) await one();
  }));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ per_s: +requests / seconds, bytes: size,
                               cpu_ms: (used.user + used.system) / 1000 / +requests,
                               versions: { sharp: sharp.versions.sharp, vips: sharp.versions.vips } }));
})();
"""


def install() -> None:
    """thumbor into its own virtualenv, sharp into its own node_modules (.cache/peers)."""
    PEERS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEERS / "thumbor")], check=True)
    subprocess.run([str(PEERS / "thumbor" / "bin" / "pip"), "install", "-q",
                    f"thumbor=={THUMBOR_VERSION}"], check=True)
    SHARP.mkdir(exist_ok=True)
    subprocess.run(["npm", "install", "--silent", "--prefix", str(SHARP),
                    f"sharp@{SHARP_VERSION}"], check=True)


async def drive(session: aiohttp.ClientSession, send: object, requests: int, clients: int) -> float:
    """Requests per second of ``send`` (a coroutine function) from ``clients`` at once."""
    assert callable(send)
    left = [requests]

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            await send(session)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return requests / (time.perf_counter() - started)


def imageproc_sender(base: str, pipeline: str, data: bytes) -> object:
    async def send(session: aiohttp.ClientSession) -> int:
        async with session.post(f"{base}/process", params={"pipeline": pipeline}, data=data) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"imageproc {r.status}: {body[:200]!r}")
            return len(body)
    return send


def thumbor_sender(base: str, path: str) -> object:
    async def send(session: aiohttp.ClientSession) -> int:
        async with session.get(f"{base}{path}") as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"thumbor {r.status}: {body[:200]!r}")
            return len(body)
    return send


def start_thumbor(port: int, processes: int, workdir: Path) -> subprocess.Popen[bytes]:
    conf = workdir / "thumbor.conf"
    conf.write_text(
        "LOADER = 'thumbor.loaders.http_loader'\n"
        "STORAGE = 'thumbor.storages.no_storage'\n"
        "RESULT_STORAGE = None\n"
        "QUALITY = 80\n"
    )
    return subprocess.Popen(
        [str(THUMBOR), "-p", str(port), "-i", "127.0.0.1", "-c", str(conf),
         "--processes", str(processes), "-l", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def run_sharp(file: Path, width: int, requests: int, clients: int) -> dict[str, object]:
    out = subprocess.run(
        ["node", "-e", SHARP_SCRIPT, str(SHARP / "node_modules" / "sharp"), str(file),
         str(width), "80", str(requests), str(clients)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    big = (600, 400) if args.smoke else (6000, 4000)
    width = 80 if args.smoke else 800
    data = bytes(photo(*big).jpegsave_buffer(Q=90))
    source = workdir / "photo.jpg"
    source.write_bytes(data)
    cores = len(os.sched_getaffinity(0))

    files = web.Application()
    files.router.add_static("/", workdir)
    files_runner = web.AppRunner(files, access_log=None)
    await files_runner.setup()
    files_port = free_port()
    await web.TCPSite(files_runner, "127.0.0.1", files_port).start()

    service = start_service(workdir / "logs", cores, 2 * args.clients)
    base = service.url("imageproc")
    groups: dict[str, int] = {}
    senders: dict[str, object] = {
        f"imageproc effort={e}": imageproc_sender(
            base, f"resize:w={width}/format:jpeg,q=80,effort={e}", data
        )
        for e in args.efforts
    }
    groups.update({name: service.pids()["imageproc"] for name in senders})
    thumbor = None
    if THUMBOR.exists():
        t_port = free_port()
        thumbor = start_thumbor(t_port, cores, workdir)
        path = f"/unsafe/{width}x0/filters:quality(80)/127.0.0.1:{files_port}/photo.jpg"
        name = f"thumbor {THUMBOR_VERSION}, {cores} processes"
        senders[name] = thumbor_sender(f"http://127.0.0.1:{t_port}", path)
        groups[name] = thumbor.pid
    best: dict[str, float] = {}
    cpu: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    sharp_info: dict[str, object] = {}
    try:
        await service.wait_ready()
        if thumbor is not None:
            await wait_answering(f"http://127.0.0.1:{t_port}/healthcheck", proc=thumbor,
                                 what="thumbor")
        async with aiohttp.ClientSession() as session:
            for name, send in senders.items():
                assert callable(send)
                sizes[name] = await send(session)  # warm-up, and the output's size
            for _ in range(args.rounds):
                for name, send in senders.items():
                    before = cpu_seconds(groups[name])
                    rate = await drive(session, send, args.requests, args.clients)
                    used = cpu_seconds(groups[name]) - before
                    best[name] = max(best.get(name, 0.0), rate)
                    cpu.setdefault(name, []).append(1000 * used / args.requests)
                if SHARP.exists():
                    result = await asyncio.to_thread(
                        run_sharp, source, width, args.requests, args.clients
                    )
                    name = f"sharp {result['versions']['sharp']} in-process"  # type: ignore[index]
                    best[name] = max(best.get(name, 0.0), float(result["per_s"]))  # type: ignore[arg-type]
                    sizes[name] = int(result["bytes"])  # type: ignore[call-overload]
                    cpu.setdefault(name, []).append(float(result["cpu_ms"]))  # type: ignore[arg-type]
                    sharp_info = result
    finally:
        service.stop_all(timeout=30)
        if thumbor is not None:
            os.killpg(thumbor.pid, 15)
            thumbor.wait(30)
        await files_runner.cleanup()
    return {
        "case": f"{big[0]}x{big[1]} JPEG ({len(data)} bytes) -> {width} px JPEG q80",
        "cpus": cores, "clients": args.clients, "requests": args.requests, "rounds": args.rounds,
        "sharp": sharp_info.get("versions"),
        "missing": [n for n, p in (("thumbor", THUMBOR), ("sharp", SHARP)) if not p.exists()],
        "rows": [{"contender": n, "per_s": round(best[n], 2), "output_bytes": sizes[n],
                  "cpu_ms_per_image": round(statistics.median(cpu[n]), 1),
                  "cpu_bound_per_s": round(1000 * cores / statistics.median(cpu[n]), 2)}
                 for n in best],
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def table(report: dict[str, object]) -> str:
    rows = report["rows"]
    assert isinstance(rows, list)
    lines = ["| contender | images/s (best round) | CPU ms per image (median) "
             "| CPU-bound images/s on all cores | output bytes |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['contender']} | {r['per_s']:.2f} | {r['cpu_ms_per_image']:.1f} "
              f"| {r['cpu_bound_per_s']:.2f} | {r['output_bytes']} |" for r in rows]
    lines.append(f"\n{report['case']}; {report['cpus']} CPUs, {report['clients']} clients, "
                 f"best of {report['rounds']} rounds of {report['requests']} requests; "
                 f"load average after {report['load_average_after']}")
    if report["missing"]:
        lines.append(f"not installed (run --install): {', '.join(report['missing'])}")  # type: ignore[arg-type]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="install thumbor and sharp, then exit")
    parser.add_argument("--smoke", action="store_true", help="a tiny image, few requests")
    parser.add_argument("--requests", type=int, default=None, help="requests per round and contender")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--efforts", default="0,1,2", help="imageproc JPEG efforts to run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.install:
        install()
        return 0
    args.requests = args.requests or (4 if args.smoke else 40)
    args.efforts = [int(e) for e in args.efforts.split(",") if e]
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
