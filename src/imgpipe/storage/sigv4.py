"""Presigned S3 URLs (AWS Signature Version 4, query string), signed locally.

The runner presigns a GET and a PUT for every job. botocore's
``generate_presigned_url`` resolves endpoint rules, runs its event hooks and
builds a whole request for each: most of a millisecond of CPU per URL. This
signs the same URL directly (path-style, ``UNSIGNED-PAYLOAD``, the headers the
PUT must carry signed), with the derived signing key kept for the day;
``tests/test_sigv4.py`` checks it gives botocore's URL character for
character. :meth:`Presigner.of` answers ``None`` for an endpoint it does not
handle (one with a path or a query), and :meth:`Presigner.url` for headers it
does not sign (not ASCII): the caller then asks botocore.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _query_value(text: str) -> str:
    return quote(text, safe="-_.~")


class Presigner:
    """SigV4 query signing for one endpoint, region and key pair."""

    def __init__(self, endpoint: str, host: str, region: str, access_key: str,
                 secret_key: str) -> None:
        self._endpoint = endpoint
        self._host = host
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._keys: dict[str, bytes] = {}

    @classmethod
    def of(cls, endpoint_url: str, region: str, access_key: str,
           secret_key: str) -> Presigner | None:
        """A presigner for ``endpoint_url`` (``scheme://host[:port]``), else ``None``."""
        parts = urlsplit(endpoint_url)
        if (parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query
                or parts.fragment or parts.path not in ("", "/") or parts.username
                or not endpoint_url.isascii()):
            return None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None and parts.port != _DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{parts.port}"
        return cls(f"{parts.scheme}://{parts.netloc}", host, region, access_key, secret_key)

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = _hmac(f"AWS4{self._secret_key}".encode(), day)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            self._keys = {day: key}
        return key

    def url(self, method: str, bucket: str, key: str, *, expires: int,
            headers: Mapping[str, str] | None = None, now: datetime | None = None) -> str | None:
        """The presigned URL of ``method`` on ``bucket/key``; ``headers`` are signed
        (the request must send them as they are). ``None`` for headers not in ASCII
        or named twice."""
        signed = {"host": self._host}
        for name, value in (headers or {}).items():
            if not (name.isascii() and value.isascii()):
                return None
            if name.lower() in signed:
                return None
            signed[name.lower()] = " ".join(value.split())
        names = sorted(signed)
        at = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        day = at[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        path = quote(f"/{bucket}/{key}", safe="/~")
        query = (f"X-Amz-Algorithm={ALGORITHM}"
                 f"&X-Amz-Credential={_query_value(f'{self._access_key}/{scope}')}"
                 f"&X-Amz-Date={at}&X-Amz-Expires={expires}"
                 f"&X-Amz-SignedHeaders={_query_value(';'.join(names))}")
        canonical = "\n".join((
            method, path, query, *(f"{n}:{signed[n]}" for n in names), "",
            ";".join(names), "UNSIGNED-PAYLOAD"))
        to_sign = "\n".join((ALGORITHM, at, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"{self._endpoint}{path}?{query}&X-Amz-Signature={signature}"
