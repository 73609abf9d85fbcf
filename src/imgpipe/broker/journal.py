"""The embedded broker's journal: its state in SQLite, written with group commit.

Writes from many tasks are gathered while the previous transaction commits
and go to disk together in the next one: each writer waits until its own
statements are durable, and a burst of publishes costs a few disk syncs,
not one each. SQLite runs in one thread of its own, off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

Statement = tuple[str, Sequence[Any]]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, arguments TEXT NOT NULL DEFAULT '{}')",
    ("CREATE TABLE IF NOT EXISTS bindings (exchange TEXT NOT NULL, queue TEXT NOT NULL,"
    " pattern TEXT NOT NULL, PRIMARY KEY (exchange, queue, pattern))"),
    ("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
    " exchange TEXT NOT NULL, routing_key TEXT NOT NULL, message_id TEXT,"
    " headers TEXT NOT NULL, body BLOB NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0,"
    " dead_reason TEXT)"),
)


class Journal:
    """A SQLite file that applies batches of statements atomically and durably."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgpipe-journal")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[list[Statement], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self) -> None:
        await self._run(self._open)
        self._writer = asyncio.create_task(self._write_loop(), name="imgpipe-journal")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        for statement in SCHEMA:
            conn.execute(statement)
        self._conn = conn

    async def _run(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""

        def fetch() -> list[tuple[Any, ...]]:
            assert self._conn is not None
            return self._conn.execute(sql, params).fetchall()

        result: list[tuple[Any, ...]] = await self._run(fetch)
        return result

    async def write(self, statements: list[Statement]) -> None:
        """Apply ``statements`` in one transaction; return once they are on disk."""
        if self._closing:
            raise RuntimeError("the broker journal is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, future))
        self._wake.set()
        await future

    def _apply(self, batch: list[list[Statement]]) -> None:
        assert self._conn is not None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statements in batch:
                for sql, params in statements:
                    conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._pending = self._pending, []
            try:
                await asyncio.shield(self._run(self._apply, [s for s, _ in batch]))
            except Exception:  # noqa: BLE001 - retried one by one: only the faulty write fails
                for statements, future in batch:
                    try:
                        await asyncio.shield(self._run(self._apply, [statements]))
                    except Exception as exc:  # noqa: BLE001 - its writer learns of it
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(None)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def abandon(self) -> None:
        """Close the file without waiting (its event loop is gone)."""
        self._closing = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._executor.shutdown(wait=False)

    async def close(self) -> None:
        """Finish pending writes, then close the file."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
