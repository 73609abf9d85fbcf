"""Opening the broker ``AMQP_URL`` names: the one place that knows both implementations.

``amqp://`` / ``amqps://`` select RabbitMQ (:class:`~imgpipe.broker.rabbitmq.AmqpBroker`);
``file:///dir`` the embedded broker kept in ``dir``
(:class:`~imgpipe.broker.embedded.EmbeddedBroker`). Callers get a
:class:`~imgpipe.broker.protocol.Broker` and never look past it.
"""

from __future__ import annotations

from imgpipe.broker.embedded import EmbeddedBroker
from imgpipe.broker.protocol import Broker
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.broker.rabbitmq_queues import QueueShape
from imgpipe.runtime.config import AmqpSettings
from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.lifecycle import until_available


def new_broker(settings: AmqpSettings, *, name: str) -> Broker:
    """A broker not connected yet, so that a service can answer /readyz (not ready) while
    the broker is down: call ``connect()`` (e.g. through ``until_available``)."""
    if is_embedded(settings.amqp_url):
        assert settings.amqp_url is not None
        return EmbeddedBroker(embedded_path(settings.amqp_url))
    return AmqpBroker(settings.broker_url(), name=name,
                      shape=QueueShape(settings.amqp_queue_type, settings.amqp_delivery_limit),
                      idle_renew=settings.amqp_idle_renew)


async def open_broker(settings: AmqpSettings, *, name: str) -> Broker:
    """A connected broker; waits (logging) until the broker answers."""
    broker = new_broker(settings, name=name)
    await until_available("RabbitMQ", broker.connect)
    return broker
