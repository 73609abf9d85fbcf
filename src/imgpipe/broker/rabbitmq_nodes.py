"""A RabbitMQ connection over the nodes of a cluster (``AMQP_URL=amqp://a,amqp://b,...``).

:func:`connect` connects to the first node that answers, in the order given.
The connection is aio-pika's robust connection (it restores channels,
declarations and consumers after a loss) with one difference: each attempt to
connect again goes to the next node, so a client whose node dies moves to
another while the dead one stays down, and comes back round to it later.
What was published but not confirmed when a node died is sent again by the
publisher (:meth:`~imgpipe.broker.rabbitmq.AmqpBroker.publish`): quorum queues
confirm a message once a majority of their nodes hold it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from yarl import URL

log = logging.getLogger(__name__)


def node_urls(url: str) -> list[str]:
    """The node URLs of a comma-separated ``AMQP_URL``."""
    return [part.strip() for part in url.split(",") if part.strip()]


class NodesConnection(aio_pika.RobustConnection):
    """A robust connection whose every (re)connection attempt tries the next node."""

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        self._nodes = [URL(u) for u in urls]
        self._attempts = -1
        super().__init__(self._nodes[0], **kwargs)

    # aio-pika clears ``transport`` right before each connection attempt (and when
    # closing): the one hook where the next attempt's URL can be chosen.
    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        self.__dict__["_transport"] = value
        if value is None and not self.__dict__.get("_close_in_progress", True):
            self._attempts += 1
            node = self._nodes[self._attempts % len(self._nodes)]
            if node != self.url:
                log.warning("connecting to another RabbitMQ node",
                            extra={"node": f"{node.host}:{node.port}"})
            self.url = node


async def connect(url: str, *, name: str, timeout: float = 10) -> aio_pika.RobustConnection:
    """Connect to the first node of ``url`` (comma-separated) that answers.

    Raises the last node's error when none answers.
    """
    nodes = node_urls(url)
    error: BaseException | None = None
    for first in range(len(nodes)):
        connection = NodesConnection(
            nodes[first:] + nodes[:first],
            client_properties={"connection_name": name}, reconnect_interval=1,
        )
        try:
            await connection.connect(timeout=timeout)
            return connection
        except BaseException as exc:
            await connection.close()
            if not isinstance(exc, Exception):
                raise
            error = exc
    assert error is not None
    raise error
