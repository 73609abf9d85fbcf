"""Opening the backends a service needs, from its settings.

Services call these functions and depend only on the protocols
(:class:`~imgpipe.core.messaging.Broker`,
:class:`~imgpipe.core.storage.ObjectStore`,
:class:`~imgpipe.core.provstore.ProvenanceStore`). Each backend's URL chooses
its implementation:

========================  ==================================  =========================
setting                   a server's URL: the real backend    ``file:///dir``: embedded
========================  ==================================  =========================
``AMQP_URL``              ``amqp://`` / ``amqps://`` RabbitMQ  broker journal in ``dir``
``S3_URL``                ``http(s)://`` S3                    ``dir/<bucket>/<key>``
``COUCHDB_URL``           ``http(s)://`` CouchDB               ``dir/<COUCHDB_DB>.sqlite3``
========================  ==================================  =========================
"""

from __future__ import annotations

from imgpipe.core.config import AmqpSettings, CouchSettings, S3Settings
from imgpipe.core.embedded import embedded_path, is_embedded
from imgpipe.core.embedded.broker import EmbeddedBroker
from imgpipe.core.embedded.objects import LocalStore
from imgpipe.core.embedded.provstore import SqliteProvenanceStore
from imgpipe.core.messaging import AmqpBroker, Broker
from imgpipe.core.provstore import CouchStore, ProvenanceStore
from imgpipe.core.storage import ObjectStore, S3Store


async def open_broker(settings: AmqpSettings, *, name: str) -> Broker:
    if is_embedded(settings.amqp_url):
        assert settings.amqp_url is not None
        embedded = EmbeddedBroker(embedded_path(settings.amqp_url))
        await embedded.connect()
        return embedded
    broker = AmqpBroker(settings.broker_url(), name=name)
    await broker.connect()
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


async def open_object_store(settings: S3Settings, *, buckets: tuple[str, ...] = ()) -> ObjectStore:
    store = object_store_for(settings)
    await store.connect()
    if settings.s3_create_buckets:
        for bucket in buckets:
            await store.ensure_bucket(bucket)
    return store


async def open_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """Open the provenance database; when CouchDB is down, it opens on first use."""
    store = provenance_store_for(settings)
    if isinstance(store, SqliteProvenanceStore):
        await store.connect()
        return store
    try:
        await store.connect()
    except Exception:  # noqa: BLE001 - readiness reports it; requests retry
        await store.close()
    return store
