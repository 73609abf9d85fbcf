"""Cost limits of the upload service: heavy requests at once, verify rate, recent verdicts.

* :class:`HeavySlots`: at most ``UPLOAD_HEAVY_CONCURRENCY`` heavy requests
  (verification, PROV export, lineage as PROV) run at once; one more is
  refused at once with 429 ``busy`` and ``Retry-After`` instead of queueing
  behind them.
* :class:`RateLimit`: a token bucket per principal (a token's name, or the
  client address without tokens): ``UPLOAD_VERIFY_PER_MINUTE``
  verifications that re-run anything through imageproc a minute, as a burst
  of as many; past it 429 ``rate_limited`` with the seconds until the next
  one. (A verification re-runs at most UPLOAD_MAX_PIPELINES steps per stage.)
* :class:`RerunCache`: a re-run's result is kept for
  ``UPLOAD_VERIFY_CACHE_SECONDS`` under (input sha256, pipeline, imageproc's
  software versions), so verifying a job again costs reads and hashes but no
  imageproc work and no rate. The verdict itself is never cached: a stored
  object changed since is still found at once.

Every refusal is counted in ``imgpipe_upload_limited_total{limit=...}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from imgpipe.client.imageproc import ImageprocClient, Processed
from imgpipe.errors import TransientError
from imgpipe.upload import metrics


class _Refused(TransientError):
    """A cost limit's refusal: 429 with the seconds to wait in ``Retry-After``."""

    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(_Refused):
    reason = "busy"


class RateLimited(_Refused):
    reason = "rate_limited"


class HeavySlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    @asynccontextmanager
    async def slot(self, what: str) -> AsyncIterator[None]:
        if self.busy >= self.limit:
            metrics.LIMITED.labels(limit="heavy_concurrency").inc()
            raise Busy(f"{self.limit} heavy requests (verification, PROV export) are running; "
                       f"{what} was not started: retry in a moment (UPLOAD_HEAVY_CONCURRENCY).",
                       retry_after=1)
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


class RateLimit:
    """``per_minute`` events a minute per key, in bursts of at most as many."""

    MAX_KEYS = 10_000

    def __init__(self, per_minute: float, *, clock: Any = time.monotonic) -> None:
        self.per_second = per_minute / 60
        self.capacity = max(1.0, per_minute)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, what: str) -> None:
        """Spend one event of ``key``, or raise :class:`RateLimited` with the wait."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) / self.per_second)
            metrics.LIMITED.labels(limit="verify_rate").inc()
            raise RateLimited(f"Too many {what} requests: at most {self.capacity:g} a minute "
                              f"(UPLOAD_VERIFY_PER_MINUTE); retry in {wait} s.", retry_after=wait)
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > self.MAX_KEYS:
            self._buckets.popitem(last=False)


class RerunCache:
    """Recent re-runs by (input sha256, pipeline, software versions); their image bytes
    are not kept (verification compares hashes)."""

    MAX_ENTRIES = 4096

    def __init__(self, seconds: float, *, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Processed]] = OrderedDict()

    def get(self, key: Hashable) -> Processed | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Hashable, result: Processed) -> None:
        if self.seconds <= 0:
            return
        self._entries[key] = (self._clock() + self.seconds, replace(result, body=b""))
        self._entries.move_to_end(key)
        while len(self._entries) > self.MAX_ENTRIES:
            self._entries.popitem(last=False)


class MeteredReprocessor:
    """imageproc as one verification uses it: a recent identical re-run is answered from
    :class:`RerunCache`; the first that is not spends one of ``principal``'s verify rate."""

    def __init__(self, imageproc: ImageprocClient, cache: RerunCache, rate: RateLimit,
                 principal: str) -> None:
        self._imageproc, self._cache, self._rate, self._principal = imageproc, cache, rate, principal
        self._charged = False

    async def process(self, data: bytes, pipeline: str) -> Processed:
        sha = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        found = self._cache.get((sha, pipeline, self._imageproc.versions))
        if found is not None:
            metrics.RERUNS_CACHED.inc()
            return found
        if not self._charged:
            self._rate.take(self._principal, "verification")
            self._charged = True
        result = await self._imageproc.process(data, pipeline)
        versions = (result.imageproc_version, result.vips_version, result.pyvips_version)
        self._cache.put((sha, pipeline, versions), result)
        return result
