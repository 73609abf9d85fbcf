"""Helpers for provenance tests that drive the running services over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp

from imgpipe.client.api import Client
from imgpipe.provstore.open import open_provenance_store
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import CouchSettings, S3Settings
from imgpipe.storage.open import open_object_store
from imgpipe.storage.protocol import ObjectStore
from imgpipe.testing.processes import ServiceProcesses
from tests.backend_sets import settings_of
from tests.system import wait_for


async def submit(system: ServiceProcesses, data: bytes, *pipelines: str, name: str = "image") -> str:
    """Upload ``data`` with ``pipelines``; the job id."""
    async with Client(system.upload_url) as client:
        [job] = await client.upload_files([(name, data)], pipelines=pipelines)
    return str(job["job_id"])


async def call(system: ServiceProcesses, method: str, path: str, **params: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
        method, f"{system.upload_url}{path}", params=params
    ) as resp:
        body = await resp.text()
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, body


async def wait_done(system: ServiceProcesses, job_id: str, outputs: int = 1, timeout: float = 90) -> Any:
    """The job's view once it has ``outputs`` outputs (failing fast on a failed job)."""
    async def ready() -> Any:
        status, view = await call(system, "GET", f"/jobs/{job_id}")
        assert status == 200, view
        assert view["status"] != "failed", view
        return view if len(view["outputs"]) >= outputs else None

    return await wait_for(ready, timeout=timeout)


async def verify(system: ServiceProcesses, job_id: str) -> dict[str, Any]:
    status, report = await call(system, "POST", f"/jobs/{job_id}/verify")
    assert status == 200, report
    assert isinstance(report, dict)
    return report


@asynccontextmanager
async def _closing(opening: Awaitable[Any]) -> AsyncIterator[Any]:
    store = await opening
    try:
        yield store
    finally:
        await store.close()


def opened_objects(system: Any) -> AbstractAsyncContextManager[ObjectStore]:
    """The system's object store (S3 or embedded), opened as its services open it."""
    return _closing(open_object_store(settings_of(S3Settings, system.env)))


def opened_provenance(system: Any) -> AbstractAsyncContextManager[ProvenanceStore]:
    """The system's provenance database (CouchDB or embedded SQLite)."""
    return _closing(open_provenance_store(settings_of(CouchSettings, system.env)))


async def imgpipe(system: ServiceProcesses, *args: str) -> tuple[int, str, str]:
    """Run the ``imgpipe`` command with the system's settings: exit status, stdout, stderr."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imgpipe.cli", *args], capture_output=True,
                              text=True, env=os.environ | system.env, timeout=120, check=False)

    done = await asyncio.to_thread(run)
    return done.returncode, done.stdout, done.stderr
