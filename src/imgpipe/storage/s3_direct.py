"""A one-request S3 PUT through a presigned URL, without botocore.

An upload of a small image is one ``PutObject``; through aiobotocore it costs
~3 ms of CPU (parameter validation, endpoint rules, event hooks, SigV4 over
the headers, a CRC32 and a payload hash, response parsing), the body's
transfer a fraction of that. :class:`DirectPut` sends the same PUT with a
presigned URL (:mod:`imgpipe.storage.sigv4`) over aiohttp: the content type,
the metadata and ``x-amz-checksum-sha256`` are signed. That checksum is the
body's sha256, which the caller has already computed (an upload hashes the image
while it arrives), and S3 refuses a body that does not match it (``BadDigest``);
a ``Content-MD5`` would cost another pass, 3 ms for a 1.7 MB image.
Like the botocore client it tries once more when S3 cannot be reached or
answers 5xx; failures map as :func:`imgpipe.storage.s3._transient`
maps botocore's (unreachable or 5xx: ``storage_unavailable``, refused:
``storage_error``).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping

import aiohttp

from imgpipe.errors import TransientError, Unavailable
from imgpipe.storage.sigv4 import Presigner

ATTEMPTS = 2
EXPIRES = 300
_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class DirectPut:
    """PUTs of whole objects on one S3 endpoint, through one aiohttp session."""

    def __init__(self, presigner: Presigner, *, connect_timeout: float = 3,
                 read_timeout: float = 60) -> None:
        self._presigner = presigner
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def put(self, bucket: str, key: str, body: bytes, *, sha256: bytes,
                  content_type: str, metadata: Mapping[str, str]) -> bool:
        """Store ``body`` (whose sha256 digest is ``sha256``) at ``bucket/key``; ``False``
        when it cannot be signed here (metadata not in ASCII: the caller asks botocore,
        which says why)."""
        checksum = base64.b64encode(sha256).decode()
        headers = {"Content-Type": content_type, "x-amz-checksum-sha256": checksum} | {
            f"x-amz-meta-{k}": v for k, v in metadata.items()}
        url = self._presigner.url("PUT", bucket, key, expires=EXPIRES, headers=headers)
        if url is None:
            return False
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        for attempt in range(1, ATTEMPTS + 1):
            try:  # a BytesIO goes out in chunks (raw bytes over 1 MiB make aiohttp warn)
                async with self._session.put(url, data=io.BytesIO(body), headers=headers,
                                             allow_redirects=False) as response:
                    answer = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if attempt < ATTEMPTS:
                    continue
                raise Unavailable(f"S3 is unavailable (put): {type(exc).__name__}",
                                  reason="storage_unavailable") from exc
            if status < 300:
                return True
            if status >= 500:
                if attempt < ATTEMPTS:
                    continue
                raise Unavailable(f"S3 is unavailable (put): HTTP {status}",
                                  reason="storage_unavailable")
            code = _CODE.search(answer)
            raise TransientError(
                f"S3 refused the request (put): {code.group(1).decode() if code else status}",
                reason="storage_error")
        raise AssertionError("unreachable")
