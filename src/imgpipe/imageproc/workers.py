"""A bounded pool of libvips worker threads with an admission queue.

At most ``workers`` images are processed at once (pyvips releases the GIL);
up to ``queue`` more wait their turn; beyond that a request is refused at
once with :class:`Overloaded` (HTTP 429). A request that exceeds its time
limit answers :class:`ProcessingTimeout`; its thread keeps its slot until
libvips returns, so a slow image can never overbook the pool. ``dither``'s
error diffusion and the palette PNG encode (libvips quantising in one call it
cannot stop) run in one helper process per worker
(:class:`~imgpipe.imageproc.diffusers.DiffusionHelpers`), killed at the
deadline, so they neither hold the GIL nor outlive their time limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from imgpipe.credentials.signing import ContentSigner
from imgpipe.domain.pipeline import Pipeline
from imgpipe.imageproc import metrics
from imgpipe.imageproc.credentials import StepOrigin, sign_result
from imgpipe.imageproc.diffusers import DiffusionHelpers
from imgpipe.imageproc.engine import Result, process
from imgpipe.imageproc.errors import Overloaded, ProcessingTimeout
from imgpipe.imageproc.safety import Limits


class WorkerPool:
    """Runs :func:`imgpipe.imageproc.engine.process` off the event loop."""

    def __init__(
        self,
        workers: int,
        queue: int,
        limits: Limits,
        timeout: float,
        overlays: Mapping[str, bytes] | None = None,
        signer: ContentSigner | None = None,
    ) -> None:
        self.workers = workers
        self.overlays = dict(overlays or {})
        self.capacity = workers + queue
        self.limits = limits
        self.timeout = timeout
        self.signer = signer
        self.admitted = 0
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="imgpipe-vips")
        self.diffusers = DiffusionHelpers(workers)

    def check_capacity(self) -> None:
        """Raise :class:`Overloaded` when no request can be admitted now."""
        if self.admitted >= self.capacity:
            raise Overloaded(
                f"all {self.workers} workers busy and {self.capacity - self.workers} queued",
                retry_after=1,
            )

    def _work(self, data: bytes, pipeline: Pipeline, deadline: float,
              origin: StepOrigin) -> Result:
        result = process(
            data, pipeline, self.limits, self.overlays, deadline, self.diffusers
        )
        if self.signer is None:
            return result
        return sign_result(self.signer, result, data, pipeline, origin, self.overlays)

    async def run(self, data: bytes, pipeline: Pipeline,
                  origin: StepOrigin | None = None) -> Result:
        """Process ``data`` with ``pipeline`` in a worker thread, within the time limit.

        With a signer the output is signed in the same thread, right after encoding.
        """
        self.check_capacity()
        self.admitted += 1
        metrics.IN_FLIGHT.inc()
        loop = asyncio.get_running_loop()
        queued = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        job = partial(self._work, data, pipeline, deadline, origin or StepOrigin())
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
                started = time.perf_counter()
                metrics.WAIT.observe(started - queued)
                future = loop.run_in_executor(self._executor, job)
                future.add_done_callback(self._finished)
                result = await asyncio.shield(future)
                metrics.DURATION.labels(result.format).observe(time.perf_counter() - started)
                return result
        except TimeoutError:
            raise ProcessingTimeout(
                f"processing took longer than {self.timeout:g} s", timeout=self.timeout
            ) from None
        finally:
            self.admitted -= 1
            metrics.IN_FLIGHT.dec()

    def _finished(self, future: asyncio.Future[Result]) -> None:
        self._slots.release()
        if not future.cancelled():
            future.exception()  # retrieved here: a timed-out request no longer awaits it

    def close(self) -> None:
        """Stop the threads once their current work is done (idempotent)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.diffusers.close()
