"""The consumer loop, written once for every broker.

For each message a broker hands over (a :class:`Received`), :class:`ConsumerLoop`:

* decodes it into a :class:`~imgpipe.broker.protocol.Delivery` (attempt number
  from its headers) and runs the handler in the message's job log context;
* while the handler fails with :class:`~imgpipe.errors.Unavailable`, holds the
  message and runs the handler again after a back-off, spending no attempt;
  stopping returns a held message to its queue;
* then settles it as :func:`~imgpipe.broker.policy.decide` says: ack, retry
  after the attempt's delay with the attempt number raised, or dead-letter
  with the ``x-imgpipe-*`` headers saying why;
* counts every outcome in :data:`~imgpipe.broker.metrics.MESSAGES` and logs
  retries and dead letters.

A broker supplies only what differs: how a message is acked, returned to its
queue, or moved (:class:`Received`), and how a consumer stops taking messages
(:meth:`ConsumerLoop.stop_taking`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from imgpipe.broker.metrics import HANDLING, IN_HANDLING, MESSAGES
from imgpipe.broker.policy import (
    Action,
    Decision,
    RetryPolicy,
    attempt_of,
    dead_letter_headers,
    decide,
    retry_headers,
)
from imgpipe.broker.protocol import Delivery, Handler, job_of
from imgpipe.broker.topology import topology
from imgpipe.runtime.logs import job_context

log = logging.getLogger(__name__)

#: Seconds before a message that could not be settled is delivered again.
RETRY_DELAY = 1.0


class Received(Protocol):
    """A message a broker handed to a consumer, and how that broker settles it.

    The settling methods return whether the outcome took effect (False: the
    broker will deliver the message again, e.g. because its channel is gone).
    """

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def redelivered(self) -> bool: ...

    @property
    def headers(self) -> Mapping[str, Any]: ...

    def settleable(self) -> bool:
        """False once the broker will deliver the message again whatever we do."""
        ...

    async def ack(self) -> bool: ...

    async def requeue(self) -> None:
        """Return the message, unchanged, to the front of its queue."""

    async def retry(self, headers: dict[str, Any], delay: float) -> bool:
        """Deliver the message again with ``headers`` after ``delay`` seconds."""
        ...

    async def dead_letter(self, headers: dict[str, Any]) -> bool:
        """Move the message to its queue's dead-letter queue with ``headers``."""
        ...


class ConsumerLoop:
    """Handles the messages of one queue; a broker's consumer feeds :meth:`process`."""

    def __init__(self, queue: str, handler: Handler, policy: RetryPolicy) -> None:
        self.queue = queue
        self._handler = handler
        self._policy = policy
        self._inflight: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    async def process(self, message: Received) -> None:
        """Run the handler on ``message`` and settle it (in the calling task)."""
        if self._stopping.is_set():
            await message.requeue()
            return
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        IN_HANDLING.labels(self.queue).inc()
        try:
            with job_context(job_of(message.body) or ""):
                await self._process(message)
        finally:
            self._inflight.discard(task)
            IN_HANDLING.labels(self.queue).dec()

    async def _process(self, message: Received) -> None:
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            redelivered=message.redelivered,
            headers=dict(message.headers),
            attempt=attempt_of(message.headers),
            max_attempts=self._policy.max_attempts,
        )
        try:
            decision = await self._handle(message, delivery)
        except asyncio.CancelledError:
            await message.requeue()
            MESSAGES.labels(self.queue, "returned").inc()
            raise
        if decision is None:
            return
        if decision.action is Action.HOLD:
            await message.requeue()
            MESSAGES.labels(self.queue, "returned").inc()
            return
        await self._settle(message, delivery, decision)

    async def _handle(self, message: Received, delivery: Delivery) -> Decision | None:
        """Run the handler, again while a backend is unavailable.

        Returns the decision; a HOLD decision means "stopped while held";
        None means the broker takes the message back on its own.
        """
        holds = 0
        while True:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - the decision below handles it
                error = exc
            HANDLING.labels(self.queue).observe(time.perf_counter() - started)
            decision = decide(error, delivery.attempt, self._policy, holds=holds)
            if decision.action is not Action.HOLD:
                return decision
            MESSAGES.labels(self.queue, "held").inc()
            log.warning("backend unavailable, holding the message for %.1fs: %s",
                        decision.delay, decision.message,
                        extra={"reason": decision.reason, "message_id": message.message_id})
            if not message.settleable():
                return None
            try:
                await asyncio.wait_for(self._stopping.wait(), decision.delay)
            except TimeoutError:
                holds += 1
                continue
            return decision

    async def _settle(self, message: Received, delivery: Delivery, decision: Decision) -> None:
        extra = {"message_id": message.message_id, "attempt": delivery.attempt,
                 "reason": decision.reason}
        if decision.action is Action.ACK:
            if await message.ack():
                MESSAGES.labels(self.queue, "acked").inc()
            return
        if decision.action is Action.RETRY:
            log.warning("attempt %d failed, retrying in %.1fs: %s", delivery.attempt,
                        decision.delay, decision.message, extra=extra)
            headers = retry_headers(delivery.headers, delivery.attempt + 1, decision)
            if await message.retry(headers, decision.delay):
                MESSAGES.labels(self.queue, "retried").inc()
            return
        log.error("message dead-lettered to %s: %s", topology(self.queue).dead_letter_queue,
                  decision.message, extra=extra)
        headers = dead_letter_headers(delivery.headers, delivery.attempt, self.queue, decision)
        if await message.dead_letter(headers):
            MESSAGES.labels(self.queue, "dead_lettered").inc()

    async def stop_taking(self) -> None:
        """Ask the broker for no more messages (each broker its own way)."""

    async def stop(self, grace: float) -> None:
        """Stop taking messages; after ``grace`` seconds, return unfinished ones."""
        self._stopping.set()
        await self.stop_taking()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
