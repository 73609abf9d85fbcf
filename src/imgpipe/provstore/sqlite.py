"""Provenance in SQLite (aiosqlite): the CouchDB store's behaviour in one file.

Documents are JSON under their id, written once: a second write of the same
id is refused and reported, as CouchDB's 409 is. :meth:`find` takes the same
Mango selectors as CouchDB; equalities on indexed fields use SQLite
expression indexes, and :mod:`~imgpipe.provstore.mango` decides the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from imgpipe.errors import TransientError
from imgpipe.provstore import mango
from imgpipe.provstore.protocol import INDEXES, PAGE_SIZE, Doc


def _unavailable(exc: BaseException) -> TransientError:
    return TransientError(
        f"the provenance database is unavailable: {type(exc).__name__}: {exc}",
        reason="provenance_unavailable",
    )


def _json_path(field: str) -> str | None:
    """A SQL literal for ``json_extract`` of a dotted Mango field, or None if unsafe."""
    parts = field.split(".")
    if any(not p or '"' in p or "'" in p or "\\" in p for p in parts):
        return None
    return "'$" + "".join(f'."{p}"' for p in parts) + "'"


def database_file(directory: Path, database: str) -> Path:
    """Where the database named ``database`` (``COUCHDB_DB``) is kept."""
    return directory / (database.replace("/", "%2F") + ".sqlite3")


class SqliteProvenanceStore:
    """:class:`~imgpipe.provstore.protocol.ProvenanceStore` in a SQLite file."""

    def __init__(self, directory: Path, database: str) -> None:
        self.path = database_file(directory, database)
        self._db: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()

    async def connect(self, *, create: bool = True) -> None:
        """Open (with ``create``, creating when needed) the database, its table and indexes."""
        if not create and not self.path.exists():
            raise _unavailable(FileNotFoundError(f"no provenance database at {self.path}"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise _unavailable(exc) from exc
        try:
            await db.execute("PRAGMA busy_timeout=10000")  # first: services open the file together
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(
                "CREATE TABLE IF NOT EXISTS docs ("
                " id TEXT PRIMARY KEY, rev TEXT NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID"
            )
            columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(docs)")}
            if "seq" not in columns:  # a data directory from before the changes feed
                await db.execute("ALTER TABLE docs ADD COLUMN seq INTEGER")
            await db.execute("CREATE INDEX IF NOT EXISTS docs_seq ON docs (seq)")
            for index in INDEXES:
                for field in index["index"]["fields"]:
                    path = _json_path(field)
                    if path is not None:
                        await db.execute(
                            f'CREATE INDEX IF NOT EXISTS "{index["name"]}-{field}"'
                            f" ON docs (json_extract(doc, {path}))"
                        )
            await db.commit()
        except sqlite3.Error as exc:
            await db.close()
            raise _unavailable(exc) from exc
        self._db = db

    async def _database(self) -> aiosqlite.Connection:
        async with self._opening:  # requests arriving together open the file once
            if self._db is None:
                await self.connect()
        assert self._db is not None
        return self._db

    async def put(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Store ``doc`` under ``doc_id``; False when that id is already stored."""
        db = await self._database()
        data = json.dumps({k: v for k, v in doc.items() if k not in ("_id", "_rev")},
                          separators=(",", ":"), default=str)
        rev = "1-" + hashlib.md5(data.encode(), usedforsecurity=False).hexdigest()
        try:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO docs (id, rev, doc, seq)"
                " VALUES (?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM docs))",
                (doc_id, rev, data)
            )
            await db.commit()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        return cursor.rowcount == 1

    async def get(self, doc_id: str) -> Doc | None:
        db = await self._database()
        try:
            rows = await db.execute_fetchall(
                "SELECT id, rev, doc FROM docs WHERE id = ?", (doc_id,)
            )
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        return next((_doc(row) for row in rows), None)

    async def find(
        self, selector: Mapping[str, Any], *, limit: int = 1000, sort: Sequence[Any] | None = None
    ) -> list[Doc]:
        """Documents matching a Mango ``selector``, in id order unless ``sort`` says otherwise."""
        return await self._select(selector, limit=limit, sort=sort)

    async def pages(
        self, selector: Mapping[str, Any], *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[list[Doc]]:
        """Every document ``selector`` matches, ``page_size`` at a time, in id order (each
        page starts after the last id of the one before)."""
        after: str | None = None
        while True:
            page = await self._select(selector, limit=page_size, after=after)
            if page:
                yield page
            if len(page) < page_size:
                return
            after = str(page[-1]["_id"])

    async def _select(self, selector: Mapping[str, Any], *, limit: int,
                      sort: Sequence[Any] | None = None, after: str | None = None) -> list[Doc]:
        db = await self._database()
        where: list[str] = []
        params: list[Any] = []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        for field, value in mango.equalities(selector).items():
            path = _json_path(field)
            if path is not None:
                where.append(f"json_extract(doc, {path}) = ?")
                params.append(value)
        sql = "SELECT id, rev, doc FROM docs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        found: list[Doc] = []
        try:
            async with db.execute(sql, params) as cursor:
                async for row in cursor:
                    doc = _doc(row)
                    if mango.matches(doc, selector):
                        found.append(doc)
                        if not sort and len(found) >= limit:
                            break
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        if sort:
            found = mango.sort_docs(found, sort)
        return found[:limit]

    async def changes(self, since: str | None, *, limit: int = 100) -> tuple[list[Doc], str]:
        """The changes feed: each document's ``seq`` is one more than the last stored."""
        db = await self._database()
        try:
            if since is None or not since.isdigit():  # (not a position of this store: now)
                now = list(await db.execute_fetchall("SELECT COALESCE(MAX(seq), 0) FROM docs"))
                return [], str(now[0][0])
            rows = list(await db.execute_fetchall(
                "SELECT id, rev, doc, seq FROM docs WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(since), limit)))
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        docs = [_doc(row) for row in rows]
        return docs, str(rows[-1][3]) if rows else since

    async def check(self) -> None:
        db = await self._database()
        try:
            await db.execute_fetchall("SELECT 1 FROM docs LIMIT 1")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


def _doc(row: Any) -> Doc:
    doc: Doc = json.loads(row[2])
    return doc | {"_id": row[0], "_rev": row[1]}
