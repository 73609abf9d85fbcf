"""Making the backends a service needs, from its settings.

Services call these functions and depend only on the protocols
(:class:`~imgpipe.broker.protocol.Broker`,
:class:`~imgpipe.storage.protocol.ObjectStore`,
:class:`~imgpipe.provstore.protocol.ProvenanceStore`). Each backend's URL chooses
its implementation:

========================  ==================================  =========================
setting                   a server's URL: the real backend    ``file:///dir``: embedded
========================  ==================================  =========================
``AMQP_URL``              ``amqp://`` / ``amqps://`` RabbitMQ  broker journal in ``dir``
``S3_URL``                ``http(s)://`` S3                    ``dir/<bucket>/<key>``
``COUCHDB_URL``           ``http(s)://`` CouchDB               ``dir/<COUCHDB_DB>.sqlite3``
========================  ==================================  =========================

``new_*`` make a backend without waiting for its server, so that a service
can answer /readyz (not ready) while its backends are down; ``open_*`` also
wait until the server answers.
"""

from __future__ import annotations

from imgpipe.broker.embedded import EmbeddedBroker
from imgpipe.broker.protocol import Broker
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.provstore.couch import CouchStore
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.provstore.sqlite import SqliteProvenanceStore
from imgpipe.runtime.config import AmqpSettings, CouchSettings, S3Settings
from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.lifecycle import until_available
from imgpipe.storage.local import LocalStore
from imgpipe.storage.protocol import ObjectStore
from imgpipe.storage.s3 import S3Store


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


def object_store_for(settings: S3Settings) -> LocalStore | S3Store:
    """The object store ``S3_URL`` selects, not yet connected."""
    if is_embedded(settings.s3_url):
        return LocalStore(embedded_path(settings.s3_url), check_bucket=settings.s3_input_bucket)
    return S3Store(settings)


def provenance_store_for(settings: CouchSettings) -> SqliteProvenanceStore | CouchStore:
    """The provenance store ``COUCHDB_URL`` selects, not yet connected."""
    if is_embedded(settings.couchdb_url):
        return SqliteProvenanceStore(embedded_path(settings.couchdb_url), settings.couchdb_db)
    return CouchStore(settings)


async def new_object_store(settings: S3Settings) -> ObjectStore:
    """An object store client; no request is made yet."""
    store = object_store_for(settings)
    await store.connect()
    return store


async def ensure_buckets(store: ObjectStore, settings: S3Settings, buckets: tuple[str, ...]) -> None:
    """Create ``buckets`` when the settings allow; raises TransientError while S3 is down."""
    if settings.s3_create_buckets:
        for bucket in buckets:
            await store.ensure_bucket(bucket)


async def open_object_store(settings: S3Settings, *, buckets: tuple[str, ...] = ()) -> ObjectStore:
    store = await new_object_store(settings)
    try:
        await ensure_buckets(store, settings, buckets)
    except BaseException:
        await store.close()
        raise
    return store


async def new_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """The provenance database; CouchDB's opens on first use (and again after an outage)."""
    store = provenance_store_for(settings)
    if isinstance(store, SqliteProvenanceStore):
        await store.connect()
    return store


async def open_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """Open the provenance database; when CouchDB is down, it opens on first use."""
    store = await new_provenance_store(settings)
    if isinstance(store, CouchStore):
        try:
            await store.connect()
        except Exception:  # noqa: BLE001 - readiness reports it; requests retry
            await store.close()
    return store
