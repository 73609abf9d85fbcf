"""PROV documents built and serialised in worker processes, off the event loop.

Building a job's PROV document and writing it as PROV-N or PROV-JSON-LD is
pure Python that holds the GIL for seconds on a large job; in a thread it
would still slow the event loop's every turn. A small process pool (as many
processes as heavy requests may run at once, started on first use) does it
instead; the records go over as plain dicts and the text comes back.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from imgpipe.domain.prov import job_document, jobs_document, serialize


def _job(job_id: str, docs: Sequence[Mapping[str, Any]], fmt: str) -> str:
    return serialize(job_document(job_id, docs), fmt)


def _jobs(docs: Sequence[Mapping[str, Any]], fmt: str) -> str:
    return serialize(jobs_document(docs), fmt)


def _ready() -> None:
    """Run once by each worker as it starts: the PROV model is imported by then."""


class Renderer:
    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    def _start(self) -> ProcessPoolExecutor:
        # Starting the processes blocks (fork server, imports): done in a thread, every
        # worker started before the pool is used, so no later submit starts one on the loop.
        pool = ProcessPoolExecutor(self._workers,
                                   mp_context=multiprocessing.get_context("forkserver"))
        for started in [pool.submit(_ready) for _ in range(self._workers)]:
            started.result()
        return pool

    async def _executor(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:
                self._pool = await asyncio.to_thread(self._start)
        return self._pool

    async def job(self, job_id: str, docs: Sequence[Mapping[str, Any]], fmt: str) -> str:
        """One job's record (one bundle) as ``fmt``."""
        pool = await self._executor()
        return await asyncio.get_running_loop().run_in_executor(pool, _job, job_id, list(docs), fmt)

    async def jobs(self, docs: Sequence[Mapping[str, Any]], fmt: str) -> str:
        """Records of several jobs (one bundle each) as ``fmt``."""
        pool = await self._executor()
        return await asyncio.get_running_loop().run_in_executor(pool, _jobs, list(docs), fmt)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
