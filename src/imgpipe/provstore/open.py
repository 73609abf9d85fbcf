"""Opening the provenance store ``COUCHDB_URL`` names: the one place that knows both.

``http(s)://`` selects CouchDB (:class:`~imgpipe.provstore.couch.CouchStore`);
``file:///dir`` the SQLite file ``dir/<COUCHDB_DB>.sqlite3``
(:class:`~imgpipe.provstore.sqlite.SqliteProvenanceStore`). Callers get a
:class:`~imgpipe.provstore.protocol.ProvenanceStore` and never look past it.
"""

from __future__ import annotations

from imgpipe.provstore.couch import CouchStore
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.provstore.sqlite import SqliteProvenanceStore
from imgpipe.runtime.config import CouchSettings
from imgpipe.runtime.fileurl import embedded_path, is_embedded
from imgpipe.runtime.lifecycle import connected


def new_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """A provenance store not connected yet: it opens on first use (and again after an
    outage), so a service answers /readyz (not ready) while the database is down."""
    if is_embedded(settings.couchdb_url):
        return SqliteProvenanceStore(embedded_path(settings.couchdb_url), settings.couchdb_db)
    return CouchStore(settings)


async def open_provenance_store(settings: CouchSettings) -> ProvenanceStore:
    """A connected provenance store; raises TransientError (closing it) while it is down."""
    return await connected(new_provenance_store(settings))
