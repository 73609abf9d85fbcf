"""What services need of the provenance database, whatever keeps it.

Services depend on :class:`ProvenanceStore` only;
:class:`~imgpipe.provstore.couch.CouchStore` (CouchDB) and
:class:`~imgpipe.provstore.sqlite.SqliteProvenanceStore` (one SQLite file)
implement it. Documents are written once under a deterministic id: a second
write of the same id (a redelivered event) is reported, not an error.
Queries are CouchDB Mango selectors on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

Doc = dict[str, Any]

#: Documents one page of :meth:`ProvenanceStore.pages` holds unless asked otherwise.
PAGE_SIZE = 500

#: Mango indexes the queries of the job API and lineage rely on.
INDEXES: Sequence[Mapping[str, Any]] = (
    {"name": "by-job", "index": {"fields": ["job_id"]}},
    {"name": "by-input-sha", "index": {"fields": ["input.sha256"]}},
    {"name": "by-output-sha", "index": {"fields": ["output.sha256"]}},
)


class ProvenanceStore(Protocol):
    """What services need of the provenance database."""

    async def connect(self) -> None:
        """Open the database, creating it and its :data:`INDEXES` when needed.

        Raises :class:`~imgpipe.errors.TransientError` while the database
        cannot be reached. Every other method connects on first use (and
        again after an outage), so calling this first is optional.
        """
        ...

    async def put(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Store ``doc`` under ``doc_id``; False when it was already stored."""
        ...

    async def get(self, doc_id: str) -> Doc | None: ...

    async def find(
        self, selector: Mapping[str, Any], *, limit: int = 1000, sort: Sequence[Any] | None = None
    ) -> list[Doc]: ...

    async def changes(self, since: str | None, *, limit: int = 100) -> tuple[list[Doc], str]:
        """Documents stored after position ``since``, in the order they were stored, and the
        position after them (pass it back to continue). ``None`` asks for the position now
        (no documents). Positions are opaque text (CouchDB's update sequence), so a client
        can resume from one it was given (SSE's ``Last-Event-ID``)."""
        ...

    def pages(
        self, selector: Mapping[str, Any], *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[list[Doc]]:
        """Every document ``selector`` matches, a page of at most ``page_size`` at a time:
        for reads with no upper bound (say, every record of a large job). CouchDB pages
        with ``_find`` bookmarks."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...
