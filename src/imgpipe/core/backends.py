"""Opening the backends a service needs, from its settings.

Services call these functions and depend only on the protocols
(:class:`~imgpipe.core.messaging.Broker`,
:class:`~imgpipe.core.storage.ObjectStore`,
:class:`~imgpipe.core.provstore.ProvenanceStore`), so another implementation
can be chosen here without touching them.
"""

from __future__ import annotations

from imgpipe.core.config import AmqpSettings, CouchSettings, S3Settings
from imgpipe.core.messaging import AmqpBroker, Broker
from imgpipe.core.provstore import CouchStore, ProvenanceStore
from imgpipe.core.storage import ObjectStore, S3Store


async def open_broker(settings: AmqpSettings, *, name: str) -> Broker:
    broker = AmqpBroker(settings.broker_url(), name=name)
    await broker.connect()
    return broker


async def open_object_store(settings: S3Settings, *, buckets: tuple[str, ...] = ()) -> ObjectStore:
    store = S3Store(settings)
    await store.connect()
    if settings.s3_create_buckets:
        for bucket in buckets:
            await store.ensure_bucket(bucket)
    return store


async def open_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """Open the provenance database; when CouchDB is down, it opens on first use."""
    store = CouchStore(settings)
    try:
        await store.connect()
    except Exception:  # noqa: BLE001 - readiness reports it; requests retry
        await store.close()
    return store
