"""Opening the object store ``S3_URL`` names: the one place that knows both implementations.

``http(s)://`` selects S3 (:class:`~imgpipe.storage.s3.S3Store`);
``file:///dir`` a directory holding ``dir/<bucket>/<key>``
(:class:`~imgpipe.storage.local.LocalStore`). Callers get an
:class:`~imgpipe.storage.protocol.ObjectStore` and never look past it.
``buckets`` are created on connect when ``S3_CREATE_BUCKETS`` allows.
"""

from __future__ import annotations

from imgpipe.runtime.config import S3Settings
from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.lifecycle import connected
from imgpipe.storage.local import LocalStore
from imgpipe.storage.protocol import ObjectStore
from imgpipe.storage.s3 import S3Store


def new_object_store(settings: S3Settings, *, buckets: tuple[str, ...] = ()) -> ObjectStore:
    """An object store not connected yet, so that a service can answer /readyz (not ready)
    while S3 is down: call ``connect()`` (e.g. through ``until_available``)."""
    created = buckets if settings.s3_create_buckets else ()
    if is_embedded(settings.s3_url):
        return LocalStore(embedded_path(settings.s3_url), check_bucket=settings.s3_input_bucket,
                          buckets=created)
    return S3Store(settings, buckets=created)


async def open_object_store(settings: S3Settings, *, buckets: tuple[str, ...] = ()) -> ObjectStore:
    """A connected object store; raises TransientError (closing it) while S3 is down."""
    return await connected(new_object_store(settings, buckets=buckets))
