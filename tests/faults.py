"""Fault-test helpers: batches of uploads, and the invariant every batch must keep.

The invariant (issue "Nothing lost, nothing doubled"): every upload that got a 202
has exactly one output object and one complete provenance record, or exactly one
failed record with a reason; no other objects or records exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from imgpipe.client.api import ApiError, Client
from imgpipe.provstore.couch import CouchStore
from imgpipe.runtime.config import CouchSettings, S3Settings
from imgpipe.storage.s3 import S3Store
from imgpipe.testing.processes import ServiceProcesses
from tests.images import image_bytes

REPORT = Path(__file__).resolve().parent.parent / "test-artifacts" / "fault-report.json"
COMPLETE = ("job.received", "step.started", "step.completed")


@dataclass
class Batch:
    """Uploads sent to one system during a fault test, and what was answered."""

    system: ServiceProcesses
    pipeline: str = "resize:w=48/format:png"
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> expected: done|failed|any
    refused: Counter[int] = field(default_factory=Counter)  # status -> count (final answers)
    retried_503: int = 0
    retry_after_seen: bool = True

    async def upload(
        self, data: bytes, *, name: str = "img.png", expect: str = "done",
        retry_503: bool = True, deadline: float = 60.0, token: str | None = None,
    ) -> str | None:
        """POST one file; on 503 wait Retry-After and try again (as a client would)."""
        stop = time.monotonic() + deadline
        async with Client(self.system.upload_url, token=token, timeout=30) as client:
            while True:
                try:
                    job = await client.upload(data, filename=name, pipeline=self.pipeline)
                except TimeoutError:
                    status, retry_after = 0, 1.0
                except ApiError as exc:
                    status, retry_after = exc.status or 0, exc.retry_after
                    if status == 0:  # unreachable
                        retry_after = 1.0
                    elif status == 503:
                        self.retry_after_seen &= retry_after is not None
                else:
                    self.accepted[job["job_id"]] = expect
                    return str(job["job_id"])
                if status in (0, 503) and retry_503 and time.monotonic() < stop:
                    self.retried_503 += 1
                    await asyncio.sleep(min(retry_after or 1.0, 2.0))
                    continue
                self.refused[status] += 1
                return None

    async def upload_many(self, images: list[bytes], *, expect: str = "done",
                          concurrency: int = 4, **kwargs: Any) -> list[str | None]:
        slots = asyncio.Semaphore(concurrency)

        async def one(data: bytes) -> str | None:
            async with slots:
                return await self.upload(data, expect=expect, **kwargs)

        return list(await asyncio.gather(*(one(d) for d in images)))


class SteadyUploads:
    """Uploads a small PNG ``rate`` times a second through ``batch`` from :meth:`start`
    until :meth:`stop`; ``accepted_at`` holds when each upload was accepted."""

    def __init__(self, batch: Batch, rate: float) -> None:
        self.batch = batch
        self.rate = rate
        self.accepted_at: list[float] = []
        self.running = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.running.set()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.running.clear()
        assert self._task is not None
        await self._task

    async def _one(self, n: int) -> None:
        job = await self.batch.upload(image_bytes(64 + n % 40, 48 + n // 40, ".png"),
                                      deadline=120)
        if job is not None:
            self.accepted_at.append(time.time())

    async def _run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        n = 0
        while self.running.is_set():
            tasks.append(asyncio.create_task(self._one(n)))
            n += 1
            await asyncio.sleep(1 / self.rate)
        await asyncio.gather(*tasks)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] with none of ``times`` in it."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def stores(system: ServiceProcesses) -> tuple[S3Store, CouchStore]:
    env = system.env
    s3 = S3Store(S3Settings(s3_url=env["S3_URL"], s3_access_key=env["S3_ACCESS_KEY"],
                            s3_secret_key=SecretStr(env["S3_SECRET_KEY"])))
    couch = CouchStore(CouchSettings(couchdb_url=env["COUCHDB_URL"], couchdb_user=env["COUCHDB_USER"],
                                     couchdb_password=SecretStr(env["COUCHDB_PASSWORD"]),
                                     couchdb_db=env["COUCHDB_DB"]))
    return s3, couch


@dataclass
class Snapshot:
    inputs: list[str]
    outputs: list[str]
    docs: list[dict[str, Any]]

    def docs_of(self, job: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("job_id") == job]

    def outputs_of(self, job: str) -> list[str]:
        return [k for k in self.outputs if k.startswith(f"jobs/{job}/")]


async def snapshot(system: ServiceProcesses) -> Snapshot:
    s3, couch = stores(system)
    await s3.connect()
    try:
        # records first: an output is stored before its record, so a record seen here
        # has its object in the listings that follow
        docs = await couch.find({"type": "imgpipe.provenance"}, limit=100_000)
        inputs = await s3.list_keys(system.env["S3_INPUT_BUCKET"])
        outputs = await s3.list_keys(system.env["S3_OUTPUT_BUCKET"])
    finally:
        await s3.close()
        await couch.close()
    return Snapshot(inputs, outputs, docs)


def settled(snap: Snapshot, job: str) -> bool:
    kinds = {d.get("kind") for d in snap.docs_of(job)}
    return "step.failed" in kinds or set(COMPLETE) <= kinds


async def settle(system: ServiceProcesses, jobs: list[str], timeout: float = 120) -> Snapshot:
    """Wait until every job is done or failed (or the timeout passes); the last snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            snap = await snapshot(system)
            if all(settled(snap, job) for job in jobs) or time.monotonic() > deadline:
                return snap
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


@dataclass
class Verdict:
    jobs: int = 0
    done: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "done": self.done, "failed": self.failed,
                "lost": len(self.lost), "duplicates": len(self.duplicates),
                "wrong_outcome": len(self.wrong), "stray": len(self.strays)}

    def problems(self) -> str:
        return json.dumps({"lost": self.lost, "duplicates": self.duplicates,
                           "wrong": self.wrong, "strays": self.strays}, indent=1)[:4000]


def verdict(snap: Snapshot, accepted: dict[str, str]) -> Verdict:
    """Check the invariant over everything one system stored."""
    v = Verdict(jobs=len(accepted))
    completed_sha: dict[str, str] = {}
    for job, expect in accepted.items():
        docs = snap.docs_of(job)
        kinds = Counter(str(d.get("kind")) for d in docs)
        outputs = snap.outputs_of(job)
        inputs = [k for k in snap.inputs if k == f"uploads/{job}"]
        if any(n > 1 for n in kinds.values()) or len(outputs) > 1 or len(inputs) > 1:
            v.duplicates.append(f"{job}: {dict(kinds)} outputs={outputs}")
        failed = [d for d in docs if d.get("kind") == "step.failed"]
        complete = all(kinds[k] == 1 for k in COMPLETE) and len(outputs) == 1
        if complete and (not failed or expect == "replayed"):
            v.done += 1
            outcome = "replayed" if failed else "done"
            [record] = [d for d in docs if d.get("kind") == "step.completed"]
            completed_sha[outputs[0]] = str(record.get("output", {}).get("sha256"))
            if record.get("output", {}).get("key") != outputs[0]:
                v.wrong.append(f"{job}: record names {record.get('output')}, stored {outputs}")
        elif len(failed) == 1 and not outputs and kinds["step.completed"] == 0 \
                and failed[0].get("reason") and failed[0].get("message"):
            v.failed += 1
            outcome = "failed"
        else:
            v.lost.append(f"{job}: {dict(kinds)} outputs={outputs}")
            continue
        if expect not in ("any", outcome):
            v.wrong.append(f"{job}: expected {expect}, got {outcome}")
    known = set(accepted)
    v.strays += [k for k in snap.inputs if k.removeprefix("uploads/") not in known]
    v.strays += [k for k in snap.outputs if k.split("/")[1] not in known]
    v.strays += [str(d.get("_id")) for d in snap.docs if d.get("job_id") not in known]
    return v


async def check_outputs(system: ServiceProcesses, snap: Snapshot, accepted: dict[str, str]) -> list[str]:
    """Output objects whose bytes do not match the sha256 their record names."""
    s3, _ = stores(system)
    await s3.connect()
    wrong = []
    try:
        for job in accepted:
            records = [d for d in snap.docs_of(job) if d.get("kind") == "step.completed"]
            for record in records:
                out = record["output"]
                data = await s3.get_bytes(out["bucket"], out["key"])
                if hashlib.sha256(data).hexdigest() != out["sha256"]:
                    wrong.append(f"{job}: {out['key']}")
    finally:
        await s3.close()
    return wrong


def report(name: str, fault: str, injected: int, batch: Batch, v: Verdict,
           **extra: Any) -> dict[str, Any]:
    """Add one fault test's line to test-artifacts/fault-report.json and return it."""
    line = {"test": name, "fault": fault, "faults_injected": injected,
            "uploads_202": len(batch.accepted), "refused": dict(batch.refused),
            "client_retries_after_503": batch.retried_503} | v.as_dict() | extra
    REPORT.parent.mkdir(exist_ok=True)
    lines = json.loads(REPORT.read_text()) if REPORT.exists() else []
    lines = [entry for entry in lines if entry.get("test") != name] + [line]
    REPORT.write_text(json.dumps(lines, indent=2) + "\n")
    return line


def assert_invariant(v: Verdict) -> None:
    assert not v.lost and not v.duplicates and not v.wrong and not v.strays, v.problems()
