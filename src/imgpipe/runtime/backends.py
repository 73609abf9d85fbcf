"""Making the broker a service needs, from its settings.

``AMQP_URL`` chooses the implementation: ``amqp://`` / ``amqps://``
RabbitMQ, ``file:///dir`` the embedded broker kept in ``dir``. The object
store and the provenance store open from :mod:`imgpipe.storage.open` and
:mod:`imgpipe.provstore.open`.

``new_broker`` makes a broker without waiting for its server, so that a
service can answer /readyz (not ready) while it is down; ``open_broker`` also
waits until the server answers.
"""

from __future__ import annotations

from imgpipe.broker.embedded import EmbeddedBroker
from imgpipe.broker.protocol import Broker
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.runtime.config import AmqpSettings
from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.lifecycle import until_available


def new_broker(settings: AmqpSettings, *, name: str) -> Broker:
    """A broker not connected yet: call ``connect()`` (e.g. through ``until_available``)."""
    if is_embedded(settings.amqp_url):
        assert settings.amqp_url is not None
        return EmbeddedBroker(embedded_path(settings.amqp_url))
    return AmqpBroker(settings.broker_url(), name=name)


async def open_broker(settings: AmqpSettings, *, name: str) -> Broker:
    broker = new_broker(settings, name=name)
    await until_available("RabbitMQ", broker.connect)
    return broker
