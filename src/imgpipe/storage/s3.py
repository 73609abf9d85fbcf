"""Object storage over S3 (aiobotocore): streaming puts and gets.

:class:`S3Store` is the S3 implementation of
:class:`~imgpipe.storage.protocol.ObjectStore`. Uploads are streamed: bytes
pass through in parts of ``part_size`` (S3 multipart once a body outgrows one
part), the sha256 is computed on the way, and a failed upload leaves no object
behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from imgpipe.errors import TransientError, Unavailable
from imgpipe.runtime.config import S3Settings
from imgpipe.storage.protocol import (
    PRESIGN_SECONDS,
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    PresignedPut,
    StoredObject,
)
from imgpipe.storage.s3_direct import DirectPut
from imgpipe.storage.sigv4 import Presigner

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
LIST_PAGE = 1000


def _transient(exc: Exception, what: str) -> TransientError:
    """S3 unreachable or failing on its side: :class:`Unavailable`; refusing us: transient."""
    message = f"S3 is unavailable ({what}): {type(exc).__name__}"
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status < 500:
            return TransientError(f"S3 refused the request ({what}): {_code(exc) or status}",
                                  reason="storage_error")
    return Unavailable(message, reason="storage_unavailable")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _SourceFailed(Exception):
    """The byte source of a streamed put failed (not S3): re-raised as it was."""


class S3Store:
    """:class:`~imgpipe.storage.protocol.ObjectStore` on an S3-compatible server.

    Path-style addressing. The client is made on first use, so a store can be
    handed out before S3 answers; :meth:`connect` also creates ``buckets``.
    """

    def __init__(self, settings: S3Settings, *, buckets: tuple[str, ...] = (),
                 part_size: int = PART_SIZE) -> None:
        self._settings = settings
        self._buckets = buckets
        self._part_size = part_size
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._presigner = Presigner.of(settings.s3_url, settings.s3_region, settings.s3_access_key,
                                       settings.s3_secret_key.get_secret_value())
        self._direct = DirectPut(self._presigner) if self._presigner else None

    async def _api(self) -> Any:
        """The aiobotocore client (no request is made to create it)."""
        async with self._opening:
            if self._client is None:
                s = self._settings
                config = AioConfig(
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",  # presigned URLs too (botocore would sign them v2)
                    retries={"max_attempts": 2, "mode": "standard"},  # callers hold and retry
                    connect_timeout=3,
                    read_timeout=60,
                )
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=s.s3_url,
                        region_name=s.s3_region,
                        aws_access_key_id=s.s3_access_key,
                        aws_secret_access_key=s.s3_secret_key.get_secret_value(),
                        config=config,
                    )
                )
            return self._client

    async def connect(self) -> None:
        """Create the buckets this store was given; raises TransientError while S3 is down."""
        for bucket in self._buckets:
            await self.ensure_bucket(bucket)

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        await self._stack.aclose()
        self._client = None

    async def ensure_bucket(self, bucket: str) -> None:
        client = await self._api()
        try:
            await client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise _transient(exc, "head bucket") from exc
        except (BotoCoreError, OSError) as exc:
            raise _transient(exc, "head bucket") from exc
        try:
            await client.create_bucket(Bucket=bucket)
            log.info("bucket created", extra={"bucket": bucket})
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _transient(exc, "create bucket") from exc

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        client = await self._api()
        digest = hashlib.sha256(data).digest()
        try:
            await self._put_whole(client, bucket, key, data, digest, content_type, metadata)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _transient(exc, "put") from exc
        return StoredObject(bucket, key, len(data), digest.hex())

    async def _put_whole(self, client: Any, bucket: str, key: str, body: bytes, sha256: bytes,
                         content_type: str, metadata: Mapping[str, str] | None) -> None:
        """One PUT: straight through a presigned URL when it can be signed here
        (:mod:`imgpipe.storage.s3_direct`; ``sha256``, the body's digest, is signed
        for S3 to check), else through botocore."""
        meta = dict(metadata or {})
        if self._direct is not None and await self._direct.put(
                bucket, key, body, sha256=sha256, content_type=content_type, metadata=meta):
            return
        await client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                                Metadata=meta)

    async def presign_get(self, bucket: str, key: str, *,
                          expires: int = PRESIGN_SECONDS) -> str | None:
        """Signed locally (SigV4 query string): no request to S3."""
        if self._presigner and (url := self._presigner.url("GET", bucket, key, expires=expires)):
            return url
        client = await self._api()
        url = await client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
        return str(url)

    async def presign_put(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        expires: int = PRESIGN_SECONDS,
    ) -> PresignedPut | None:
        """Signed locally; the content type and ``x-amz-meta-*`` headers are signed too."""
        meta = dict(metadata or {})
        headers = {"Content-Type": content_type} | {f"x-amz-meta-{k}": v for k, v in meta.items()}
        if self._presigner and (url := self._presigner.url("PUT", bucket, key, expires=expires,
                                                           headers=headers)):
            return PresignedPut(url, headers)
        client = await self._api()
        signed = await client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": content_type,
                                  "Metadata": meta}, ExpiresIn=expires)
        return PresignedPut(str(signed), headers)

    async def put_stream(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Stream ``chunks`` to ``bucket/key`` holding at most one part in memory.

        If ``chunks`` raises (a client went away, a limit was crossed), the
        partial upload is aborted and the error propagates.
        """
        client = await self._api()
        digest = hashlib.sha256()
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        source = chunks.__aiter__()
        try:
            while True:
                try:
                    chunk = await source.__anext__()
                except StopAsyncIteration:
                    break
                except BaseException as exc:
                    raise _SourceFailed() from exc
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= self._part_size:
                    if upload_id is None:
                        created = await client.create_multipart_upload(
                            Bucket=bucket, Key=key, ContentType=content_type,
                            Metadata=dict(metadata or {}),
                        )
                        upload_id = created["UploadId"]
                    body = bytes(buffer[: self._part_size])
                    del buffer[: self._part_size]
                    part = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id,
                        PartNumber=len(parts) + 1, Body=body,
                    )
                    parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
            if upload_id is None:
                await self._put_whole(client, bucket, key, bytes(buffer), digest.digest(),
                                      content_type, metadata)
            else:
                if buffer:
                    part = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id,
                        PartNumber=len(parts) + 1, Body=bytes(buffer),
                    )
                    parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
                await client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            if upload_id is not None:
                await self._abort(client, bucket, key, upload_id)
            if isinstance(exc, _SourceFailed):
                assert exc.__cause__ is not None
                raise exc.__cause__ from None
            if isinstance(exc, (ClientError, BotoCoreError, OSError)):
                raise _transient(exc, "put") from exc
            raise
        return StoredObject(bucket, key, size, digest.hexdigest())

    async def _abort(self, client: Any, bucket: str, key: str, upload_id: str) -> None:
        try:
            await asyncio.shield(
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            )
        except Exception:  # noqa: BLE001 - best effort; S3 lifecycle rules sweep the rest
            log.warning("could not abort multipart upload", extra={"key": key})

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        chunks = [chunk async for chunk in self.iter_bytes(bucket, key)]
        return b"".join(chunks)

    async def iter_bytes(self, bucket: str, key: str) -> AsyncIterator[bytes]:
        client = await self._api()
        try:
            response = await client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from exc
            raise _transient(exc, "get") from exc
        except (BotoCoreError, OSError) as exc:
            raise _transient(exc, "get") from exc
        async with response["Body"] as body:
            try:
                async for chunk in body.iter_chunks(256 * 1024):
                    yield chunk
            except (BotoCoreError, OSError) as exc:
                raise _transient(exc, "get") from exc

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        client = await self._api()
        try:
            response = await client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _transient(exc, "head") from exc
        except (BotoCoreError, OSError) as exc:
            raise _transient(exc, "head") from exc
        return ObjectInfo(
            size=int(response.get("ContentLength", 0)),
            content_type=str(response.get("ContentType", "application/octet-stream")),
            metadata=dict(response.get("Metadata", {})),
        )

    async def delete(self, bucket: str, key: str) -> None:
        client = await self._api()
        try:
            await client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _transient(exc, "delete") from exc

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = await self._api()
        keys: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _transient(exc, "list") from exc
        return keys

    async def iter_objects(
        self, bucket: str, prefix: str = "", *, start_after: str = ""
    ) -> AsyncGenerator[ListedObject, None]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, StartAfter=start_after,
                                   PaginationConfig={"PageSize": LIST_PAGE})
        try:
            async for page in pages:
                for item in page.get("Contents", []):
                    yield ListedObject(item["Key"], int(item["Size"]),
                                       str(item.get("ETag", "")).strip('"'))
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise ObjectNotFound(f"there is no bucket {bucket!r}",
                                     reason="bucket_not_found") from exc
            raise _transient(exc, "list") from exc
        except (BotoCoreError, OSError) as exc:
            raise _transient(exc, "list") from exc

    async def check(self) -> None:
        client = await self._api()
        try:
            await client.head_bucket(Bucket=self._settings.s3_input_bucket)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise _transient(exc, "head bucket") from exc
