"""Provenance storage in CouchDB (aiocouch).

:class:`CouchStore` is the CouchDB implementation of
:class:`~imgpipe.provstore.protocol.ProvenanceStore`. Documents are written
once under a deterministic id: a second write of the same id (a redelivered
event) meets CouchDB's 409 and counts as done.

Everything that works around aiocouch or differences between Apache CouchDB
and the CouchDB-compatible test server lives in :func:`_open_server`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
from aiocouch import CouchDB, Database
from aiocouch.exception import NotFoundError

from imgpipe.errors import TransientError, Unavailable
from imgpipe.provstore.protocol import INDEXES, PAGE_SIZE, Doc
from imgpipe.runtime.config import CouchSettings

log = logging.getLogger(__name__)


def _unavailable(exc: BaseException) -> TransientError:
    return Unavailable(
        f"CouchDB is unavailable: {type(exc).__name__}", reason="provenance_unavailable"
    )


_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)

BULK_MAX = 256
"""Most documents written in one ``_bulk_docs`` request."""


def _open_server(settings: CouchSettings) -> CouchDB:
    """An aiocouch server object with the headers every request needs.

    aiocouch offers only ``aiohttp.BasicAuth`` (deprecated in aiohttp 3.14)
    or cookies (which expire); a static ``Authorization`` header avoids
    both. ``Accept: application/json`` makes pouchdb-server answer JSON as
    Apache CouchDB does. aiocouch has no public way to add default headers,
    so they are set on its session here, in this one place. Idle connections
    are dropped after 2 s, before a server closes them (Node's default is 5 s):
    a request on a connection the server is closing fails with a reset.
    """
    server = CouchDB(settings.couchdb_url, timeout=aiohttp.ClientTimeout(total=30),
                     connector=aiohttp.TCPConnector(keepalive_timeout=2))
    token = base64.b64encode(
        f"{settings.couchdb_user}:{settings.couchdb_password.get_secret_value()}".encode()
    ).decode()
    session: aiohttp.ClientSession = server._server._http_session
    session.headers["Authorization"] = f"Basic {token}"
    session.headers["Accept"] = "application/json"
    return server


class CouchStore:
    """:class:`~imgpipe.provstore.protocol.ProvenanceStore` on CouchDB (or a server speaking its API)."""

    def __init__(self, settings: CouchSettings, *, database: str | None = None) -> None:
        self._settings = settings
        self._name = database or settings.couchdb_db
        self._server: CouchDB | None = None
        self._db: Database | None = None
        self._pending: list[tuple[str, Doc, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()

    async def connect(self, *, create: bool = True) -> None:
        """Open (and with ``create``, create) the database and its indexes."""
        server = _open_server(self._settings)
        try:
            if create:
                # one shard (q=1): CouchDB orders _changes per shard only, and the
                # event streams read them in the order records were stored
                db = await server.create(self._name, exists_ok=True, q=1)
                for index in INDEXES:
                    await db.index(dict(index["index"]), name=index["name"])
            else:
                db = await server[self._name]
        except BaseException as exc:
            await server.close()
            if isinstance(exc, _ERRORS):
                raise _unavailable(exc) from exc
            raise
        old, self._server, self._db = self._server, server, db
        if old is not None:
            await old.close()

    async def _database(self) -> Database:
        async with self._opening:  # puts arriving together open the database once
            if self._db is None:
                await self.connect()
        assert self._db is not None
        return self._db

    async def put(self, doc_id: str, doc: Mapping[str, Any]) -> bool:
        """Store ``doc``; puts made while a write is in flight go together in one request.

        Each write is one ``POST /db/_bulk_docs`` (no read first): CouchDB's
        per-document ``conflict`` means the document was already stored.
        """
        await self._database()
        data = {k: v for k, v in doc.items() if k not in ("_id", "_rev")}
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((doc_id, data, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BULK_MAX], self._pending[BULK_MAX:]
            try:
                rows = await self._bulk_docs([{"_id": i, **d} for i, d, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting put
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            if len(rows) != len(batch):  # rows come in request order; else match by id
                by_id = {str(row.get("id")): row for row in rows if isinstance(row, dict)}
                rows = [by_id.get(doc_id, {}) for doc_id, _, _ in batch]
            for (doc_id, _, future), row in zip(batch, rows, strict=True):
                if future.done():
                    continue
                row = row if isinstance(row, dict) else {}
                error = row.get("error")
                if error is None and ("ok" in row or "rev" in row):
                    future.set_result(True)
                elif error == "conflict":
                    future.set_result(False)
                else:
                    future.set_exception(TransientError(
                        f"CouchDB did not store {doc_id}: {error or 'no answer'}",
                        reason="provenance_refused",
                    ))

    async def _bulk_docs(self, docs: list[Doc]) -> list[Any]:
        db = await self._database()
        try:
            _, result = await db._remote._post(f"/{self._name}/_bulk_docs", data={"docs": docs})
        except _ERRORS as exc:
            raise _unavailable(exc) from exc
        return list(result) if isinstance(result, list) else []

    async def get(self, doc_id: str) -> Doc | None:
        db = await self._database()
        try:
            document = await db.get(doc_id)
        except NotFoundError:
            return None
        except _ERRORS as exc:
            raise _unavailable(exc) from exc
        return dict(document.data or {}) | {"_id": doc_id}

    async def find(
        self, selector: Mapping[str, Any], *, limit: int = 1000, sort: Sequence[Any] | None = None
    ) -> list[Doc]:
        """Mango query: one ``POST /db/_find`` with a limit (:meth:`pages` reads on)."""
        body: dict[str, Any] = {"selector": dict(selector), "limit": limit}
        if sort:
            body["sort"] = list(sort)
        return [dict(d) for d in (await self._find(body)).get("docs", [])]

    async def pages(
        self, selector: Mapping[str, Any], *, page_size: int = PAGE_SIZE
    ) -> AsyncIterator[list[Doc]]:
        """Every document ``selector`` matches, ``page_size`` at a time: each ``_find``
        carries the ``bookmark`` of the page before. (pouchdb-server, the test
        scripts' stand-in, sends no bookmark: it is paged with ``skip``.)"""
        body: dict[str, Any] = {"selector": dict(selector), "limit": page_size}
        while True:
            result = await self._find(body)
            docs = [dict(d) for d in result.get("docs", [])]
            if docs:
                yield docs
            if len(docs) < page_size:
                return
            if result.get("bookmark"):
                body["bookmark"] = result["bookmark"]
            else:
                body["skip"] = body.get("skip", 0) + len(docs)

    async def _find(self, body: dict[str, Any]) -> dict[str, Any]:
        db = await self._database()
        try:
            _, result = await db._remote._post(f"/{self._name}/_find", data=body)
        except _ERRORS as exc:
            raise _unavailable(exc) from exc
        assert isinstance(result, dict)
        return result

    async def changes(self, since: str | None, *, limit: int = 100) -> tuple[list[Doc], str]:
        db = await self._database()
        try:
            if since is None:
                info = await db.info()
                return [], str(info.get("update_seq"))
            _, result = await db._remote._get(f"/{self._name}/_changes", params={
                "since": since, "limit": limit, "include_docs": "true"})
        except _ERRORS as exc:
            raise _unavailable(exc) from exc
        assert isinstance(result, dict)
        docs = [dict(row["doc"]) for row in result.get("results", [])
                if isinstance(row.get("doc"), dict) and not str(row.get("id")).startswith("_")]
        return docs, str(result.get("last_seq", since))

    async def check(self) -> None:
        db = await self._database()
        try:
            await db.info()
        except _ERRORS as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        pending, self._pending = self._pending, []
        for _, _, future in pending:
            if not future.done():
                future.set_exception(_unavailable(ConnectionError("store closed")))
        if self._server is not None:
            await self._server.close()
        self._server = None
        self._db = None
