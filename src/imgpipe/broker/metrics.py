"""The Prometheus metrics every broker's consumers fill, under the same names.

``imgpipe_messages{queue,outcome}`` counts settled messages (``acked``,
``retried``, ``dead_lettered``, ``held``, ``returned``);
``imgpipe_messages_in_handling{queue}`` is what a consumer holds in its handler now;
``imgpipe_queue_messages{queue}`` is refreshed from the broker on each scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from imgpipe.broker.protocol import Broker

MESSAGES = Counter("imgpipe_messages", "Messages handled, by queue and outcome",
                   ["queue", "outcome"])
HANDLING = Histogram("imgpipe_message_handling_seconds", "Time a handler took per delivery",
                     ["queue"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
IN_HANDLING = Gauge("imgpipe_messages_in_handling", "Messages a consumer holds in its handler "
                    "right now", ["queue"])
QUEUE_DEPTH = Gauge("imgpipe_queue_messages", "Messages waiting in a queue (refreshed on scrape)",
                    ["queue"])


async def refresh_queue_depths(broker: Broker) -> None:
    """Set the queue-depth gauge from the broker (called on each /metrics scrape)."""
    for name, depth in (await broker.queue_depths()).items():
        QUEUE_DEPTH.labels(name).set(depth)
