"""The broker protocol services depend on, and what it hands them.

Services depend on :class:`Broker`; :class:`~imgpipe.broker.rabbitmq.AmqpBroker`
is the RabbitMQ implementation and :class:`~imgpipe.broker.embedded.EmbeddedBroker`
the in-process one, and :func:`imgpipe.broker.open.open_broker` chooses between
them from ``AMQP_URL``. Delivery rules (docs/delivery.md):

* exchanges and queues are durable; messages are persistent;
* publishing waits for the broker's confirm; ``mandatory`` publishes that no
  queue would receive raise instead of vanishing; a publish that is not
  confirmed is tried again until a deadline, then reported, never assumed;
* what happens to a message after its handler ran is decided by
  :func:`imgpipe.broker.policy.decide` and carried out by the one consumer
  loop of :mod:`imgpipe.broker.consumer`: ack, hold (backend unreachable),
  retry after a delay, or dead-letter;
* a stage's dead-letter queue can be looked at, replayed and purged through
  the broker (``imgpipe dlq``), whichever broker it is.

Queue names come from :mod:`imgpipe.broker.topology`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgpipe.broker.policy import (
    DEAD_LETTERED_AT,
    DEFAULT_DELAYS,
    ERROR,
    REASON,
    RetryPolicy,
    attempt_of,
    history_of,
    replays_of,
)
from imgpipe.runtime.logs import redact


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


Handler = Callable[[Delivery], Awaitable[None]]


def job_of(body: bytes) -> str | None:
    """The ``job_id`` of a JSON message body, when it has one (for log lines)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    job = value.get("job_id") if isinstance(value, dict) else None
    return job if isinstance(job, str) else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _death_reason(headers: Mapping[str, Any]) -> str:
    """Why RabbitMQ itself dead-lettered a message (``rejected``, ``delivery_limit``, ...)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths:
        return ""
    latest = deaths[0]
    return _text(latest.get("reason")) or "rejected" if isinstance(latest, dict) else "rejected"


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, as a person reads it."""

    message_id: str | None
    job_id: str | None
    kind: str | None
    reason: str
    error: str
    attempts: int
    replays: int
    dead_lettered_at: str
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, body: bytes, message_id: str | None, headers: Mapping[str, Any]) -> DeadLetter:
        """Read a dead-lettered message's body and ``x-imgpipe-*`` headers."""
        try:
            value = json.loads(body)
        except ValueError:
            value = {}
        value = value if isinstance(value, dict) else {}
        reason = _text(headers.get(REASON)) or _death_reason(headers)
        return cls(
            message_id=message_id,
            job_id=value.get("job_id"),
            kind=value.get("kind"),
            reason=reason or "unknown",
            error=redact(_text(headers.get(ERROR))),
            attempts=attempt_of(headers),
            replays=replays_of(headers),
            dead_lettered_at=_text(headers.get(DEAD_LETTERED_AT)),
            history=history_of(headers),
        )

    def chosen(self, ids: Sequence[str]) -> bool:
        """Whether ``ids`` (message or job ids; none: all) name this message."""
        return not ids or self.message_id in ids or self.job_id in ids

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Migration:
    """What migrating a stage's queues to the configured queue type did to one queue."""

    queue: str
    moved: int = 0
    steps: list[str] = field(default_factory=list)


class Consumer(Protocol):
    async def stop(self, grace: float) -> None:
        """Stop taking messages; wait up to ``grace`` seconds for handlers."""


class Broker(Protocol):
    """What services (and ``imgpipe dlq``) need of a message broker."""

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

    async def queue_depth(self, queue: str) -> int | None:
        """Messages in ``queue`` (ready or being handled); None when it does not exist."""
        ...

    async def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` messages of work queue ``queue``'s dead-letter queue, oldest
        first; they all stay there."""
        ...

    async def replay_dead_letters(
        self, queue: str, limit: int, ids: Sequence[str] = ()
    ) -> list[DeadLetter]:
        """Send up to ``limit`` dead letters (with ``ids``, only those message or job ids)
        back to work queue ``queue`` with a fresh attempt count and their history."""
        ...

    async def purge_dead_letters(self, queue: str) -> int:
        """Delete the messages of work queue ``queue``'s dead-letter queue; how many."""
        ...

    async def migrate_queues(self, exchange: str, delays: Sequence[float]) -> list[Migration]:
        """Give the queues of the stage fed by ``exchange`` (retry queues for ``delays``)
        the configured queue type, keeping their messages; what was done."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...
