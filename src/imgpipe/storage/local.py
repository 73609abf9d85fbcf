"""Objects in a local directory, keyed exactly as in S3.

``<root>/<bucket>/<key>`` holds an object's bytes, so a person can open an
output straight from the data directory; ``<root>/.meta/<bucket>/<key>.json``
holds its content type and metadata. Every write goes to a temporary file in
the same directory, is flushed to disk and then renamed over the key: a
reader sees the old object or the new one, never a part, and a failed or
interrupted write leaves no object behind.

It hands out no presigned URLs (``presign_*`` answer ``None``): nothing but
the process that opened it serves its directory, so the runner of
``imgpipe dev`` moves the bytes between it and imageproc itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import IO

from imgpipe.errors import InvalidInput, TransientError
from imgpipe.storage.protocol import (
    PRESIGN_SECONDS,
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    PresignedPut,
    StoredObject,
)

READ_CHUNK = 256 * 1024
_TMP_PREFIX = ".imgpipe-tmp-"
_META = ".meta"


def _unavailable(exc: BaseException, what: str) -> TransientError:
    return TransientError(
        f"the object store is unavailable ({what}): {type(exc).__name__}: {exc}",
        reason="storage_unavailable",
    )


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) for p in parts):
        raise InvalidInput(f"object key {key!r} cannot be stored in a directory",
                           reason="invalid_key")
    return parts


def _check_bucket(bucket: str) -> None:
    if not bucket or bucket.startswith(".") or "/" in bucket or bucket == "..":
        raise InvalidInput(f"bucket name {bucket!r} is not valid", reason="invalid_bucket")


def _write_atomic(path: Path, chunks: list[bytes] | None = None) -> tuple[Path, IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    handle = os.fdopen(fd, "wb")
    for chunk in chunks or ():
        handle.write(chunk)
    return Path(tmp), handle


def _commit(tmp: Path, handle: IO[bytes], path: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(tmp, path)


def _abandon(tmp: Path, handle: IO[bytes]) -> None:
    handle.close()
    tmp.unlink(missing_ok=True)


class LocalStore:
    """:class:`~imgpipe.storage.protocol.ObjectStore` over a local directory."""

    def __init__(self, root: Path, *, check_bucket: str | None = None,
                 buckets: tuple[str, ...] = ()) -> None:
        self.root = root
        self._check_bucket = check_bucket
        self._buckets = buckets

    async def connect(self) -> None:
        """Make the directory and the buckets this store was given."""
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable(exc, "open") from exc
        for bucket in self._buckets:
            await self.ensure_bucket(bucket)

    def path_of(self, bucket: str, key: str) -> Path:
        """Where the bytes of ``bucket/key`` are kept."""
        _check_bucket(bucket)
        return self.root.joinpath(bucket, *_check_key(key))

    def _meta_of(self, bucket: str, key: str) -> Path:
        parts = _check_key(key)
        return self.root.joinpath(_META, bucket, *parts[:-1], parts[-1] + ".json")

    async def ensure_bucket(self, bucket: str) -> None:
        _check_bucket(bucket)
        try:
            await asyncio.to_thread((self.root / bucket).mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable(exc, "create bucket") from exc

    def _require_bucket(self, bucket: str) -> None:
        if not (self.root / bucket).is_dir():
            raise TransientError(f"bucket {bucket!r} does not exist in {self.root}",
                                 reason="storage_unavailable")

    def _write_meta(self, bucket: str, key: str, content_type: str,
                    metadata: Mapping[str, str] | None) -> None:
        body = json.dumps({"content_type": content_type, "metadata": dict(metadata or {})})
        meta = self._meta_of(bucket, key)
        tmp, handle = _write_atomic(meta, [body.encode()])
        try:
            _commit(tmp, handle, meta)
        except BaseException:
            _abandon(tmp, handle)
            raise

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Stream ``chunks`` into ``bucket/key``; if ``chunks`` raises, nothing is stored."""
        path = self.path_of(bucket, key)
        self._require_bucket(bucket)
        digest = hashlib.sha256()
        size = 0
        try:
            tmp, handle = await asyncio.to_thread(_write_atomic, path)
        except OSError as exc:
            raise _unavailable(exc, "put") from exc
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(self._write_meta, bucket, key, content_type, metadata)
            await asyncio.to_thread(_commit, tmp, handle, path)
        except BaseException as exc:
            await asyncio.shield(asyncio.to_thread(_abandon, tmp, handle))
            if isinstance(exc, OSError):
                raise _unavailable(exc, "put") from exc
            raise
        return StoredObject(bucket, key, size, digest.hexdigest())

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await self.put_stream(bucket, key, one(), content_type=content_type,
                                     metadata=metadata)

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes(bucket, key)])

    async def iter_bytes(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        path = self.path_of(bucket, key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from exc
        except OSError as exc:
            raise _unavailable(exc, "get") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
                yield chunk
        except OSError as exc:
            raise _unavailable(exc, "get") from exc
        finally:
            handle.close()

    async def presign_get(self, bucket: str, key: str, *,
                          expires: int = PRESIGN_SECONDS) -> str | None:
        return None

    async def presign_put(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        expires: int = PRESIGN_SECONDS,
    ) -> PresignedPut | None:
        return None

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._head, bucket, key)

    def _head(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self.path_of(bucket, key)
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError as exc:
            raise _unavailable(exc, "head") from exc
        if size is None:
            return None
        try:
            meta = json.loads(self._meta_of(bucket, key).read_text())
        except (OSError, ValueError):
            meta = {}
        return ObjectInfo(
            size=size,
            content_type=str(meta.get("content_type", "application/octet-stream")),
            metadata={str(k): str(v) for k, v in dict(meta.get("metadata", {})).items()},
        )

    async def delete(self, bucket: str, key: str) -> None:
        """Delete ``bucket/key``; deleting what is not there is not an error (as in S3)."""
        path, meta = self.path_of(bucket, key), self._meta_of(bucket, key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)

        try:
            await asyncio.to_thread(remove)
        except IsADirectoryError:
            return
        except OSError as exc:
            raise _unavailable(exc, "delete") from exc

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys in ``bucket`` that start with ``prefix``, in S3's (byte) order."""
        _check_bucket(bucket)
        base = self.root / bucket

        def walk() -> list[str]:
            keys = []
            for directory, dirs, files in os.walk(base):
                rel = Path(directory).relative_to(base).as_posix()
                dirs[:] = [d for d in dirs if not d.startswith(_TMP_PREFIX)]
                for name in files:
                    if name.startswith(_TMP_PREFIX):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
            return sorted(keys, key=lambda k: k.encode())

        try:
            return await asyncio.to_thread(walk)
        except OSError as exc:
            raise _unavailable(exc, "list") from exc

    async def iter_objects(
        self, bucket: str, prefix: str = "", *, start_after: str = ""
    ) -> AsyncGenerator[ListedObject, None]:
        """Walk one directory at a time in S3's byte order: a file ``x`` sorts as ``x``, a
        directory ``x`` as ``x/``, since every key under it starts so."""
        _check_bucket(bucket)
        base = self.root / bucket
        if not await asyncio.to_thread(base.is_dir):
            raise ObjectNotFound(f"there is no bucket {bucket!r}", reason="bucket_not_found")

        def entries(directory: Path, rel: str) -> list[tuple[str, bool, int, int]]:
            found = []
            with os.scandir(directory) as scan:
                for entry in scan:
                    if entry.name.startswith(_TMP_PREFIX):
                        continue
                    key = rel + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        found.append((key + "/", True, 0, 0))
                    elif entry.is_file(follow_symlinks=False):
                        stat = entry.stat()
                        found.append((key, False, stat.st_size, stat.st_mtime_ns))
            return sorted(found, key=lambda e: e[0].encode())

        async def walk(directory: Path, rel: str) -> AsyncGenerator[ListedObject, None]:
            try:
                listed = await asyncio.to_thread(entries, directory, rel)
            except OSError as exc:
                raise _unavailable(exc, "list") from exc
            for key, is_dir, size, mtime in listed:
                # skip subtrees wholly outside the prefix or before start_after
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if is_dir:
                    if start_after.startswith(key) or key.encode() > start_after.encode():
                        async for item in walk(directory / key[len(rel):-1], key):
                            yield item
                elif key.startswith(prefix) and key.encode() > start_after.encode():
                    yield ListedObject(key, size, f"{size:x}-{mtime:x}")

        async for item in walk(base, ""):
            yield item

    async def check(self) -> None:
        probe = self.root / (self._check_bucket or "")
        if not await asyncio.to_thread(probe.is_dir):
            raise TransientError(f"{probe} is not a directory", reason="storage_unavailable")

    async def close(self) -> None:
        return None
