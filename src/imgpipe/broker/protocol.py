"""Messaging: the broker protocol services depend on, its topology and metrics.

Services depend on the :class:`Broker` protocol; :class:`~imgpipe.broker.rabbitmq.AmqpBroker`
is the RabbitMQ implementation and
:class:`~imgpipe.broker.embedded.EmbeddedBroker` the in-process one. Delivery rules (DESIGN.md, "Delivery guarantees"):

* exchanges and queues are durable; messages are persistent;
* publishing waits for the broker's confirm; ``mandatory`` publishes that no
  queue would receive raise instead of vanishing; a publish that is not
  confirmed is tried again until a deadline, then reported, never assumed;
* what happens to a message after its handler ran is decided by
  :func:`imgpipe.broker.policy.decide`: ack, hold (backend unreachable),
  retry through a delayed-retry queue, or dead-letter.

Topology of a stage whose events arrive on exchange ``E`` (names from
:func:`topology`): the work queue ``imgpipe.E`` bound to ``E`` with ``#``
and dead-lettering to the fanout exchange ``imgpipe.E.dlx``, which feeds the
dead-letter queue ``imgpipe.E.dlq``; one retry queue per back-off delay,
``imgpipe.E.retry.<ms>ms``, whose messages expire after that delay back into
the work queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from imgpipe.broker.policy import (
    DEFAULT_DELAYS,
    Action,
    RetryPolicy,
)
from imgpipe.errors import PermanentError

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0

MESSAGES = Counter("imgpipe_messages", "Messages handled, by queue and outcome",
                   ["queue", "outcome"])
HANDLING = Histogram("imgpipe_message_handling_seconds", "Time a handler took per delivery",
                     ["queue"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
QUEUE_DEPTH = Gauge("imgpipe_queue_messages", "Messages waiting in a queue (refreshed on scrape)",
                    ["queue"])


def work_queue_name(exchange: str) -> str:
    """The durable queue that holds a stage's work, named after its exchange."""
    return f"imgpipe.{exchange}"


@dataclass(frozen=True)
class Topology:
    """The names of a work queue's companions."""

    queue: str

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"

    def retry_queue(self, delay: float) -> str:
        return f"{self.queue}.retry.{round(delay * 1000)}ms"


def topology(queue: str) -> Topology:
    return Topology(queue)


@dataclass(frozen=True)
class Delivery:
    """A message handed to a handler: its body and what the broker knows of it."""

    body: bytes
    message_id: str | None
    redelivered: bool
    headers: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = len(DEFAULT_DELAYS) + 1

    @property
    def final(self) -> bool:
        """Whether a failure now dead-letters the message instead of retrying it."""
        return self.attempt >= self.max_attempts


Outcome = Action
"""The older name of :class:`~imgpipe.broker.policy.Action`."""


def outcome_of(exc: BaseException | None) -> Action:
    if exc is None:
        return Action.ACK
    if isinstance(exc, PermanentError):
        return Action.DEAD_LETTER
    return Action.RETRY


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer(Protocol):
    async def stop(self, grace: float) -> None:
        """Stop taking messages; wait up to ``grace`` seconds for handlers."""


class Broker(Protocol):
    """What services need of a message broker."""

    async def connect(self) -> None:
        """Connect once; raise :class:`Unavailable` when the broker cannot be reached."""

    async def declare_exchange(self, exchange: str) -> None: ...

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange``, its work queue and dead-letter queue; return the queue."""

    async def publish(
        self,
        exchange: str,
        body: bytes,
        *,
        message_id: str,
        routing_key: str = "",
        mandatory: bool = True,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...

    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int, retry: RetryPolicy | None = None
    ) -> Consumer: ...

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each work and dead-letter queue this broker declared."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


def job_of(body: bytes) -> str | None:
    """The ``job_id`` of a JSON message body, when it has one (for log lines)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    job = value.get("job_id") if isinstance(value, dict) else None
    return job if isinstance(job, str) else None


async def refresh_queue_depths(broker: Broker) -> None:
    """Set the queue-depth gauge from the broker (called on each /metrics scrape)."""
    for name, depth in (await broker.queue_depths()).items():
        QUEUE_DEPTH.labels(name).set(depth)
