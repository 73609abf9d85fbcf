"""The ingest ledger: what was ingested, and where an interrupted run stopped.

Kept as small JSON objects in the input bucket, beside the uploads:

* ``ingested/<id>`` per (bucket, key, pipelines): the object's ETag, size and
  sha256 when it was read, and the job made of it (or why it was refused).
  A re-run skips an object whose ETag and size are unchanged without reading
  it, and one whose bytes hash the same after reading it;
* ``ingest-cursors/<id>`` per (bucket, prefix, pipelines): the last key
  before which every listed object was handled, while a run is unfinished.
  A resumed run lists after it; a finished run deletes it, so the next run
  lists everything again (and skips what the markers show).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from imgpipe.domain.events import stable_id
from imgpipe.domain.keys import object_key
from imgpipe.ingest.source import Source
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore

CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Marker:
    """What the ledger knows of one ingested object."""

    bucket: str
    key: str
    etag: str
    size: int
    sha256: str | None
    job_id: str | None
    refused: str | None = None


def _pipelines_id(pipelines: tuple[str, ...]) -> str:
    return "\x1e".join(pipelines)


class Ledger:
    """Markers and cursors in ``bucket`` of ``store``."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def _marker_key(self, bucket: str, key: str, pipelines: tuple[str, ...]) -> str:
        return object_key("ingested", stable_id(bucket, key, _pipelines_id(pipelines)))

    def _cursor_key(self, source: Source, pipelines: tuple[str, ...]) -> str:
        return object_key("ingest-cursors",
                          stable_id(source.bucket, source.prefix, _pipelines_id(pipelines)))

    async def _read(self, key: str) -> dict[str, Any] | None:
        try:
            data = await self.store.get_bytes(self.bucket, key)
        except ObjectNotFound:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # a damaged entry counts as none: the object is read again
        return value if isinstance(value, dict) else None

    async def _write(self, key: str, value: dict[str, Any]) -> None:
        await self.store.put_bytes(self.bucket, key, json.dumps(value).encode(),
                                   content_type=CONTENT_TYPE)

    async def marker(self, bucket: str, key: str, pipelines: tuple[str, ...]) -> Marker | None:
        value = await self._read(self._marker_key(bucket, key, pipelines))
        try:
            return Marker(**value) if value is not None else None
        except TypeError:
            return None

    async def mark(self, marker: Marker, pipelines: tuple[str, ...]) -> None:
        await self._write(self._marker_key(marker.bucket, marker.key, pipelines), asdict(marker))

    async def cursor(self, source: Source, pipelines: tuple[str, ...]) -> str:
        value = await self._read(self._cursor_key(source, pipelines))
        after = (value or {}).get("after")
        return after if isinstance(after, str) else ""

    async def save_cursor(self, source: Source, pipelines: tuple[str, ...], after: str) -> None:
        await self._write(self._cursor_key(source, pipelines),
                          {"source": source.uri, "pipelines": list(pipelines), "after": after})

    async def finish(self, source: Source, pipelines: tuple[str, ...]) -> None:
        """The run listed everything: the next one starts from the beginning."""
        await self.store.delete(self.bucket, self._cursor_key(source, pipelines))
