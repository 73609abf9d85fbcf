"""Embedded backends: the broker, object store and provenance store in one process.

They implement the same protocols as RabbitMQ, S3 and CouchDB
(:class:`~imgpipe.broker.protocol.Broker`,
:class:`~imgpipe.storage.protocol.ObjectStore`,
:class:`~imgpipe.provstore.protocol.ProvenanceStore`) over a local directory, so
imgpipe runs with no server at all (``imgpipe dev``). A ``file://`` URL in
``AMQP_URL``, ``S3_URL`` or ``COUCHDB_URL`` selects them; everything they keep
survives a restart.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from imgpipe.errors import ConfigError

SCHEME = "file"


def is_embedded(url: str | None) -> bool:
    """Does ``url`` select an embedded backend?"""
    return url is not None and urlsplit(url).scheme == SCHEME


def embedded_url(path: Path) -> str:
    """The ``file://`` URL of a directory (made absolute)."""
    return path.resolve().as_uri()


def embedded_path(url: str) -> Path:
    """The directory a ``file://`` URL names: ``file:///abs/dir`` or ``file:rel/dir``."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or parts.netloc not in ("", "localhost") or not parts.path:
        raise ConfigError(f"expected file:///path/to/dir or file:relative/dir, got {url!r}")
    return Path(unquote(parts.path)).resolve()
