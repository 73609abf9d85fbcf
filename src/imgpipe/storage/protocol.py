"""What services need of an object store, whatever keeps the bytes.

Services depend on :class:`ObjectStore` only; :class:`~imgpipe.storage.s3.S3Store`
(S3) and :class:`~imgpipe.storage.local.LocalStore` (a local directory) implement
it. Both keep objects under ``bucket/key``, store a put whole or not at all,
and raise :class:`ObjectNotFound` for a key that is not there and
:class:`~imgpipe.errors.TransientError` while the storage cannot be reached.

A store that other processes can reach over HTTP hands out presigned URLs
(:meth:`ObjectStore.presign_get`, :meth:`ObjectStore.presign_put`): each names
one object and one method, expires within minutes, and carries no credential
beyond its signature. A store that cannot (the embedded directory store)
answers ``None``, and its callers move the bytes themselves.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from imgpipe.errors import ImgpipeError


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedObject:
    """One entry of a bucket listing: enough to tell whether an object changed."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class PresignedPut:
    """A PUT of one object someone else may make: the URL and the headers it must send
    (they are part of the signature: the content type and the object's metadata)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


#: how long a presigned URL stays valid: one job's fetch or store, retries included
PRESIGN_SECONDS = 300


class ObjectNotFound(ImgpipeError):
    reason = "object_not_found"
    status = 404


class ObjectStore(Protocol):
    """What services need of an object store."""

    async def connect(self) -> None:
        """Reach the store and create the buckets it was opened with.

        Raises :class:`~imgpipe.errors.TransientError` while the store cannot
        be reached; call again to retry. Other methods work before it.
        """
        ...

    async def ensure_bucket(self, bucket: str) -> None: ...

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject: ...

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject: ...

    async def get_bytes(self, bucket: str, key: str) -> bytes: ...

    def iter_bytes(self, bucket: str, key: str) -> AsyncIterator[bytes]: ...

    async def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    async def presign_get(self, bucket: str, key: str, *,
                          expires: int = PRESIGN_SECONDS) -> str | None:
        """A URL that reads this one object for ``expires`` seconds, or ``None`` when
        this store cannot hand one out (the caller then reads the bytes itself)."""
        ...

    async def presign_put(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        expires: int = PRESIGN_SECONDS,
    ) -> PresignedPut | None:
        """A PUT that writes this one object (whole, replacing it) for ``expires`` seconds,
        or ``None`` when this store cannot hand one out."""
        ...

    async def delete(self, bucket: str, key: str) -> None: ...

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]: ...

    def iter_objects(
        self, bucket: str, prefix: str = "", *, start_after: str = ""
    ) -> AsyncGenerator[ListedObject, None]:
        """The objects under ``prefix`` after ``start_after``, in byte order of their keys,
        a page at a time (the listing is never held whole); :class:`ObjectNotFound` when
        the bucket does not exist."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...
