"""How long the upload service's heaviest requests take, and /healthz meanwhile.

    .venv/bin/python bench/upload_responsiveness.py                 # 300 pipelines
    .venv/bin/python bench/upload_responsiveness.py --pipelines 50  # smaller, seconds

Serves the upload app on loopback over embedded backends (a temporary
directory), records one job of N pipelines (a made-up record: received, then
started and completed per pipeline) and sends, one at a time: an upload with
10,000 ``pipeline`` fields, the job's provenance as PROV-JSON, PROV-N and
PROV-JSON-LD, and the lineage of its input as PROV-JSON-LD. While each runs,
/healthz is asked every 20 ms; the table gives the request's status and time
and the slowest /healthz answer (the event loop's longest stall, near enough).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from imgpipe.broker.protocol import Delivery
from imgpipe.domain.events import ObjectRef, ProvenanceEvent, new_id, provenance_event_id
from imgpipe.provenance.recorder import Recorder
from imgpipe.runtime.fileurl import embedded_url
from imgpipe.upload.app import create_app
from imgpipe.upload.service import connect_backends, new_backends
from imgpipe.upload.settings import UploadSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000185d7ba0a0000000049454e44ae426082")


def _ref(label: str) -> ObjectRef:
    return ObjectRef(bucket="b", key=f"k/{label}", sha256=hashlib.sha256(label.encode()).hexdigest(),
                     size=100, media_type="image/png", format="png", width=10, height=10)


def _events(job_id: str, pipelines: int) -> tuple[ObjectRef, list[ProvenanceEvent]]:
    original = _ref(job_id)
    names = tuple(f"resize:w={i + 1}/format:png" for i in range(pipelines))
    events = [ProvenanceEvent(
        event_id=provenance_event_id(job_id, "upload", "job.received"), kind="job.received",
        job_id=job_id, stage="upload", input=original, output=original, pipelines=names, time=T0)]
    for i, pipeline in enumerate(names):
        at = T0 + timedelta(seconds=i)
        for kind in ("step.started", "step.completed"):
            events.append(ProvenanceEvent(
                event_id=provenance_event_id(job_id, "s", kind, pipeline, original.sha256),  # type: ignore[arg-type]
                kind=kind, job_id=job_id, stage="s", pipeline=pipeline, input=original,  # type: ignore[arg-type]
                output=_ref(f"{job_id}-{i}") if kind == "step.completed" else None,
                started_at=at, ended_at=at if kind == "step.completed" else None, time=at))
    return original, events


async def _measure(session: aiohttp.ClientSession, base: str, method: str, path: str,
                   **kwargs: Any) -> tuple[int, float, float, int]:
    async def request() -> tuple[int, float]:
        started = time.perf_counter()
        async with session.request(method, base + path, **kwargs) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - started

    task = asyncio.create_task(request())
    probes: list[float] = []
    while not task.done():
        started = time.perf_counter()
        async with session.get(base + "/healthz") as resp:
            await resp.read()
        probes.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    status, seconds = await task
    return status, seconds, max(probes, default=0.0), len(probes)


def _upload_body(fields: int) -> dict[str, Any]:
    """A multipart body of one image and ``fields`` pipeline fields, as bytes (built before timing)."""
    boundary = "imgpipe-bench-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + PNG_1X1 + b"\r\n"]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="pipeline"\r\n\r\n'
              f"resize:w={i % 4000 + 1}\r\n".encode() for i in range(fields)]
    parts.append(f"--{boundary}--\r\n".encode())
    return {"data": b"".join(parts),
            "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


class ServerThread:
    """The upload app on its own event loop in a thread: the client's work never stalls it."""

    def __init__(self, tmp: Path, pipelines: int) -> None:
        self.tmp, self.pipelines = tmp, pipelines
        self.ready = threading.Event()
        self.base = ""
        self.job_id = ""
        self.original: ObjectRef | None = None
        self.records = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self.ready.wait(120):
            raise RuntimeError("the upload app did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        settings = UploadSettings(amqp_url=embedded_url(self.tmp / "b"),
                                  s3_url=embedded_url(self.tmp / "o"),
                                  couchdb_url=embedded_url(self.tmp / "p"))
        backends = new_backends(settings)
        await connect_backends(settings, backends)
        self.job_id = new_id()
        self.original, events = _events(self.job_id, self.pipelines)
        self.records = len(events)
        recorder = Recorder(backends.provenance)
        for ev in events:
            await recorder.handle(Delivery(body=ev.to_bytes(), message_id=ev.event_id,
                                           redelivered=False))
        server = TestServer(create_app(settings, backends), host="127.0.0.1")
        await server.start_server()
        self.base = str(server.make_url("")).rstrip("/")
        self.ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()
            for backend in (backends.broker, backends.store, backends.provenance):
                await backend.close()


async def main(pipelines: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, ServerThread(Path(tmp), pipelines) as server:
        job_id, base = server.job_id, server.base
        assert server.original is not None
        cases: list[tuple[str, str, str, dict[str, Any]]] = [
            ("upload, 10000 pipeline fields", "POST", "/upload", _upload_body(10_000)),
            ("provenance, PROV-JSON", "GET", f"/jobs/{job_id}/provenance", {}),
            ("provenance, PROV-N", "GET", f"/jobs/{job_id}/provenance?format=provn", {}),
            ("provenance, PROV-JSON-LD", "GET", f"/jobs/{job_id}/provenance?format=jsonld", {}),
            ("lineage, PROV-JSON-LD", "GET", f"/lineage/{server.original.sha256}?format=jsonld", {}),
            ("job status", "GET", f"/jobs/{job_id}", {}),
        ]
        print(f"job of {pipelines} pipelines ({server.records} records)")
        print("| request | status | request (s) | slowest /healthz meanwhile (ms) | probes |")
        print("|---|---|---|---|---|")
        async with aiohttp.ClientSession() as session:
            for name, method, path, kwargs in cases:
                status, seconds, slowest, probes = await _measure(session, base, method, path,
                                                                  **kwargs)
                print(f"| {name} | {status} | {seconds:.2f} | {slowest * 1000:.0f} | {probes} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipelines", type=int, default=300)
    asyncio.run(main(parser.parse_args().pipelines))
