"""The names of a stage's exchanges and queues, the same on every broker.

A stage whose events arrive on exchange ``E`` has the work queue
``imgpipe.E`` bound to ``E`` with ``#``; its dead-letter queue
``imgpipe.E.dlq`` (on RabbitMQ fed by the fanout exchange ``imgpipe.E.dlx``);
and one retry queue per back-off delay, ``imgpipe.E.retry.<ms>ms``, whose
messages expire after that delay back into the work queue (RabbitMQ only:
the embedded broker waits in memory instead).
"""

from __future__ import annotations

from dataclasses import dataclass


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
