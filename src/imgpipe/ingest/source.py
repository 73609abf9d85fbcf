"""What to ingest: ``s3://bucket/prefix``, checked against the buckets a deployment allows."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imgpipe.errors import ImgpipeError, InvalidInput

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_PREFIX = 1024


class BucketNotAllowed(ImgpipeError):
    reason = "ingest_bucket_not_allowed"
    status = 403


@dataclass(frozen=True)
class Source:
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_source(text: str) -> Source:
    """``s3://bucket/prefix`` (the prefix may be empty), or :class:`InvalidInput`."""
    value = text.strip()
    if not value.startswith("s3://"):
        raise InvalidInput(f"{value[:100]!r} is not an s3://bucket/prefix address.",
                           reason="invalid_source")
    bucket, _, prefix = value.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket):
        raise InvalidInput(f"{bucket[:100]!r} is not a bucket name (3-63 lower-case letters, "
                           "digits, '.' or '-').", reason="invalid_source")
    if len(prefix) > MAX_PREFIX or any(ord(c) < 32 for c in prefix):
        raise InvalidInput("The prefix is longer than 1024 characters or has control "
                           "characters.", reason="invalid_source")
    return Source(bucket, prefix)


def allowed_source(text: str, allowed: tuple[str, ...]) -> Source:
    """The parsed source when its bucket is one of ``allowed``, else :class:`BucketNotAllowed`."""
    source = parse_source(text)
    if source.bucket not in allowed:
        hint = (f"this deployment allows: {', '.join(allowed)}" if allowed else
                "this deployment allows none (set UPLOAD_INGEST_BUCKETS)")
        raise BucketNotAllowed(f"Bucket {source.bucket!r} may not be ingested: {hint}.",
                               bucket=source.bucket)
    return source
