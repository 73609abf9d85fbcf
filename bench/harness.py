"""Shared pieces of imgpipe's benchmarks.

* :class:`Servers` names RabbitMQ, S3 and CouchDB; :func:`private_servers`
  starts private ones (:mod:`imgpipe.testing.servers`) and :meth:`Servers.from_env`
  takes those named by the project's variables (the smoke tests use that).
* :class:`Stack` runs ``imgpipe <service>`` processes
  (:class:`imgpipe.testing.processes.ServiceProcesses`: the run's own exchanges,
  buckets and database); the ``/proc`` readings give their memory and CPU time.
* :func:`image_set` makes (and caches) a deterministic set of photo-like images.
* :class:`Watcher` sees each job's output stored (the stage's ``processed``
  event) and its provenance stored (CouchDB's changes feed).

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from imgpipe.client.api import Client
from imgpipe.testing.names import run_name
from imgpipe.testing.processes import ServiceProcesses
from imgpipe.testing.servers.base import start_on_free_ports
from imgpipe.testing.servers.couchdb import start_couchdb
from imgpipe.testing.servers.rabbitmq import ensure_rabbitmq, start_rabbitmq
from imgpipe.testing.servers.seaweedfs import S3Server

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
IMGPIPE = [sys.executable, "-m", "imgpipe.cli"]
READY_PORT_VARS = {
    "upload-server": "UPLOAD_PORT",
    "imageproc": "IMAGEPROC_PORT",
    "runner": "RUNNER_PORT",
    "provenance": "PROVENANCE_PORT",
}
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Servers:
    """Where the backends are, and (for private ones) their pids."""

    amqp_url: str
    s3_url: str
    s3_access_key: str
    s3_secret_key: str
    couchdb_url: str
    couchdb_user: str
    couchdb_password: str
    couchdb: str = "CouchDB"
    pids: Mapping[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "AMQP_URL": self.amqp_url,
            "S3_URL": self.s3_url,
            "S3_ACCESS_KEY": self.s3_access_key,
            "S3_SECRET_KEY": self.s3_secret_key,
            "COUCHDB_URL": self.couchdb_url,
            "COUCHDB_USER": self.couchdb_user,
            "COUCHDB_PASSWORD": self.couchdb_password,
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Servers:
        """The servers named by ``AMQP_URL``, ``S3_*`` and ``COUCHDB_*``."""
        missing = [k for k in ("AMQP_URL", "S3_URL", "COUCHDB_URL") if not environ.get(k)]
        if missing:
            raise SystemExit(f"--external needs {', '.join(missing)} in the environment")
        return cls(
            amqp_url=environ["AMQP_URL"],
            s3_url=environ["S3_URL"],
            s3_access_key=environ.get("S3_ACCESS_KEY", "imgpipe"),
            s3_secret_key=environ.get("S3_SECRET_KEY", "imgpipe-secret"),
            couchdb_url=environ["COUCHDB_URL"],
            couchdb_user=environ.get("COUCHDB_USER", "admin"),
            couchdb_password=environ.get("COUCHDB_PASSWORD", "imgpipe-secret"),
        )


@contextlib.contextmanager
def private_servers(own_broker: bool = True, pouchdb_too: bool = False) -> Iterator[list[Servers]]:
    """Start S3 and CouchDB (and RabbitMQ unless ``own_broker`` is False) for one run;
    which CouchDB: see :mod:`imgpipe.testing.servers.couchdb`. With ``pouchdb_too``, a
    second set of the same servers with pouchdb-server as CouchDB follows the first."""
    with tempfile.TemporaryDirectory(prefix="imgpipe-bench-") as tmp:
        state = Path(tmp)
        started: list[Any] = []
        try:
            s3 = start_on_free_ports(lambda: S3Server(state / "s3", die_with_parent=True))
            started.append(s3)
            couches: list[Any] = [start_couchdb(state / "couchdb", die_with_parent=True)]
            if pouchdb_too:
                couches.append(start_couchdb(state / "pouchdb", die_with_parent=True, environ={}))
            started += couches
            if own_broker:
                broker = start_rabbitmq(state / "rabbitmq")
                started.append(broker)
            else:
                broker = ensure_rabbitmq(state / "rabbitmq", fallback_ports="auto")
            pids = {"s3 (weed)": s3.pid}
            if own_broker and broker.pid:
                pids["rabbitmq (beam)"] = broker.pid
            yield [Servers(
                amqp_url=broker.url, s3_url=s3.url, s3_access_key=s3.access_key,
                s3_secret_key=s3.secret_key, couchdb_url=couch.url, couchdb_user=couch.user,
                couchdb_password=couch.password, couchdb=couch.implementation,
                pids={k: p for k, p in {**pids, f"couchdb ({couch.implementation})": couch.pid}
                      .items() if p},
            ) for couch in couches]
        finally:
            for server in reversed(started):
                server.stop(grace=5)


# --------------------------------------------------------------------------- /proc readings


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) ... of ``pid`` in kB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def rss_mb(pid: int) -> float:
    return proc_status(pid)["VmRSS"] / 1024


def peak_rss_mb(pid: int) -> float:
    return proc_status(pid)["VmHWM"] / 1024


def reset_peak_rss(pid: int) -> None:
    """Make ``VmHWM`` start again from the current RSS (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine() -> dict[str, Any]:
    """What the report says about the machine and the moment."""
    with contextlib.suppress(OSError):
        model = next(
            (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")), "")
    mem = proc_meminfo_gib()
    import pyvips

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem,
        "python": platform.python_version(),
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def proc_meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return float("nan")


# --------------------------------------------------------------------------- services


class Stack(ServiceProcesses):
    """imgpipe's services as processes for one benchmark run, with names of their own."""

    def __init__(self, servers: Servers, logs: Path, *, env: Mapping[str, str] | None = None,
                 name: str | None = None) -> None:
        super().__init__(name or run_name("b"), servers.env(), logs,
                         env={"LOG_LEVEL": "warning", **(env or {})})
        self.servers = servers

    async def remove_names(self) -> None:
        """Delete this run's queues, exchanges and database (best effort)."""
        with contextlib.suppress(Exception):
            await self.names.remove(self.servers.amqp_url,
                                    (self.servers.couchdb_url, couch_headers(self.servers)))


def couch_headers(servers: Servers) -> dict[str, str]:
    token = base64.b64encode(f"{servers.couchdb_user}:{servers.couchdb_password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json",
            "Accept-Encoding": "identity"}


def start_profilers(stack: Stack, folder: Path) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on every service of ``stack`` (raw collapsed stacks, one file each)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
         "--nonblocking", "--output", str(folder / f"{key}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for key, pid in stack.pids().items()]


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for proc in profilers:
        proc.send_signal(signal.SIGINT)
    for proc in profilers:
        proc.wait(30)


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    name: str
    data: bytes
    width: int
    height: int
    format: str

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def _base(width: int, height: int, seed: int) -> Any:
    """A photo-like canvas: gradients, soft waves and grain, kept in memory."""
    import pyvips

    xyz = pyvips.Image.xyz(width, height)
    r = xyz[0] * (255 / width)
    g = xyz[1] * (255 / height)
    b = (xyz[0] * 0.011 + xyz[1] * 0.006).sin() * 90 + 128
    noise = pyvips.Image.gaussnoise(width, height, sigma=8, mean=0, seed=seed)
    return (r.bandjoin([g, b]) + noise).cast("uchar").copy(interpretation="srgb").copy_memory()


def _graphic(width: int, height: int, seed: int) -> Any:
    """A screenshot-like canvas for PNGs: flat areas and sharp edges, little grain."""
    import pyvips

    xyz = pyvips.Image.xyz(width, height)
    cells = ((xyz[0] / 97).floor() + (xyz[1] / 61).floor() * 3 + seed) % 7
    r = cells * 36
    g = (cells * 53) % 255
    b = xyz[0] * (200 / width) + 40
    return r.bandjoin([g, b]).cast("uchar").copy(interpretation="srgb").copy_memory()


def image_set(count: int, megapixels: tuple[float, float], png_share: float = 0.1,
              seed: int = 8, png_megapixels: tuple[float, float] = (1.0, 4.0)) -> list[Image]:
    """``count`` images: JPEGs of ``megapixels`` (uniform) and ``png_share`` PNGs.

    Deterministic for the same arguments; cached under ``.cache/bench``.
    """
    key = hashlib.sha256(
        json.dumps([count, megapixels, png_share, seed, png_megapixels, 2]).encode()
    ).hexdigest()[:12]
    folder = CACHE / f"images-{key}"
    index = folder / "index.json"
    if not index.exists():
        _make_images(folder, count, megapixels, png_share, seed, png_megapixels)
    entries = json.loads(index.read_text())
    return [Image(e["name"], (folder / e["name"]).read_bytes(), e["width"], e["height"],
                  e["format"]) for e in entries]


def _make_images(folder: Path, count: int, megapixels: tuple[float, float], png_share: float,
                 seed: int, png_megapixels: tuple[float, float]) -> None:
    rng = random.Random(seed)
    pngs = round(count * png_share)
    largest = max(megapixels[1], png_megapixels[1]) * 1e6
    side = int((largest * 16 / 9) ** 0.5) + 16
    photo = _base(side, side, seed)
    graphic = _graphic(side, side, seed) if pngs else None
    tmp = folder.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    png_indices = set(rng.sample(range(count), pngs))
    entries = []
    for i in range(count):
        is_png = i in png_indices
        low, high = png_megapixels if is_png else megapixels
        mp = rng.uniform(low, high) * 1e6
        aspect = rng.choice((4 / 3, 3 / 2, 16 / 9))
        width = int((mp * aspect) ** 0.5)
        height = int(width / aspect)
        if rng.random() < 0.2:
            width, height = height, width
        left = rng.randrange(0, side - width + 1)
        top = rng.randrange(0, side - height + 1)
        if is_png:
            assert graphic is not None
            data = graphic.crop(left, top, width, height).pngsave_buffer(compression=6)
            name = f"img-{i:04d}.png"
        else:
            data = photo.crop(left, top, width, height).jpegsave_buffer(Q=rng.choice((80, 85, 92)))
            name = f"img-{i:04d}.jpg"
        (tmp / name).write_bytes(data)
        entries.append({"name": name, "width": width, "height": height,
                        "format": "png" if is_png else "jpeg"})
    (tmp / "index.json").write_text(json.dumps(entries))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)


# --------------------------------------------------------------------------- load and watch


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Watcher:
    """Times when each job's output is stored and when its provenance is stored.

    Output stored: the runner publishes the stage's ``processed`` event only
    after the output is in S3; the watcher's own queue on that exchange sees it.
    Provenance stored: the ``step.completed`` document appears in CouchDB's
    changes feed (document ids start with the job id).
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.output_at: dict[str, float] = {}
        self.provenance_at: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self.changed = asyncio.Event()
        self._since = "now"

    async def start(self) -> None:
        self._connection = await aio_pika.connect(self.stack.servers.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.stack.env["AMQP_EXCHANGE_PUBLISH"], aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(f"{self.stack.name}.bench-watch", exclusive=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._on_processed, no_ack=True)
        self._tasks.append(asyncio.create_task(self._follow_changes()))

    async def _on_processed(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        job_id = json.loads(message.body).get("job_id")
        if job_id and job_id not in self.output_at:
            self.output_at[job_id] = time.perf_counter()
            self.changed.set()

    async def _follow_changes(self) -> None:
        servers = self.stack.servers
        url = f"{servers.couchdb_url}/{self.stack.env['COUCHDB_DB']}/_changes"
        async with aiohttp.ClientSession(headers=couch_headers(servers),
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:
            while True:
                try:
                    params = {"feed": "continuous", "since": self._since, "heartbeat": "5000"}
                    async with session.get(url, params=params) as resp:
                        if resp.status != 200:
                            await asyncio.sleep(0.2)
                            continue
                        async for line in resp.content:
                            if line.strip():
                                self._on_change(json.loads(line))
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    await asyncio.sleep(0.2)

    def _on_change(self, change: dict[str, Any]) -> None:
        now = time.perf_counter()
        self._since = str(change.get("seq", self._since))
        doc_id = str(change.get("id", ""))
        job_id = doc_id[:32]
        if "-step.completed-" in doc_id:
            self.provenance_at.setdefault(job_id, now)
        elif "-step.failed-" in doc_id:
            self.failed.setdefault(job_id, now)
        self.changed.set()

    async def wait(self, jobs: Sequence[str], timeout: float) -> None:
        """Wait until every job has its output and provenance stored (or failed)."""
        deadline = time.monotonic() + timeout
        pending = set(jobs)
        while pending:
            pending = {j for j in pending if j not in self.failed
                       and (j not in self.output_at or j not in self.provenance_at)}
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{len(pending)} of {len(jobs)} jobs unfinished after {timeout:.0f}s "
                    f"(outputs seen {len(self.output_at)}, provenance {len(self.provenance_at)})")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks)
        if self._connection is not None:
            await self._connection.close()


async def upload_all(api: Client, images: Sequence[Image], clients: int,
                     pipeline: str | None = None) -> dict[str, tuple[float, float]]:
    """Upload every image, ``clients`` at a time; job id -> (sent at, 202 at)."""
    jobs: dict[str, tuple[float, float]] = {}
    todo = list(reversed(images))

    async def client() -> None:
        while todo:
            image = todo.pop()
            sent = time.perf_counter()
            job = await api.upload(image.data, filename=image.name, pipeline=pipeline)
            jobs[job["job_id"]] = (sent, time.perf_counter())

    await asyncio.gather(*(client() for _ in range(clients)))
    return jobs


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        yield session


@contextlib.contextmanager
def servers_for(external: bool, shared_broker: bool,
                pouchdb_too: bool = False) -> Iterator[list[Servers]]:
    """The servers named by the environment (``--external``), or private ones (see
    :func:`private_servers`)."""
    if external:
        yield [Servers.from_env()]
    else:
        with private_servers(not shared_broker, pouchdb_too) as servers:
            yield servers


def finish(report: dict[str, Any], out: Path | None, as_json: bool,
           table: Callable[[dict[str, Any]], str]) -> int:
    """Write the report to ``out`` (if given) and print it as JSON or as tables."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if as_json else table(report))
    return 0
