"""The embedded broker's state: exchanges, bindings, queues and their journal.

:class:`BrokerCore` is what one process shares for a broker directory: the
topic routing, the in-memory queues, and the SQLite journal that makes a
publish durable before it returns and a message stay until it is settled.
:class:`~imgpipe.broker.embedded.EmbeddedBroker` is the handle each
service uses on top of it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpipe.broker.journal import Journal, Statement
from imgpipe.broker.policy import replay_headers
from imgpipe.errors import ConfigError, TransientError

log = logging.getLogger(__name__)


JOURNAL_FILE = "broker.sqlite3"
LOCK_FILE = "broker.lock"


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` is zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split(".") if routing_key else [])


@dataclass(eq=False)
class StoredMessage:
    seq: int
    queue: str
    exchange: str
    routing_key: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    deliveries: int = 0


@dataclass(eq=False)
class MessageQueue:
    name: str
    ready: deque[StoredMessage] = field(default_factory=deque)
    unacked: dict[int, StoredMessage] = field(default_factory=dict)
    waiters: deque[asyncio.Future[StoredMessage]] = field(default_factory=deque)

    async def get(self) -> StoredMessage:
        """The next ready message, waiting for one; it counts as unacked from then on."""
        if self.ready:
            message = self.ready.popleft()
        else:
            waiter: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                message = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.put(waiter.result(), front=True)
                elif waiter in self.waiters:
                    self.waiters.remove(waiter)
                raise
        self.unacked[message.seq] = message
        return message

    def put(self, message: StoredMessage, *, front: bool = False) -> None:
        """Make ``message`` ready (again), handing it to a waiting consumer if there is one."""
        self.unacked.pop(message.seq, None)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        (self.ready.appendleft if front else self.ready.append)(message)


class BrokerCore:
    """The state of one broker directory, shared by the handles of a process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.get_running_loop()
        self.journal = Journal(directory / JOURNAL_FILE)
        self.exchanges: set[str] = set()
        self.bindings: dict[str, set[tuple[str, str]]] = {}
        self.queues: dict[str, MessageQueue] = {}
        self.users = 0
        self._next_seq = 1
        self._lock_fd: int | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"the embedded broker in {self.directory} is in use by another process; "
                "stop it or choose another data directory",
                reason="broker_in_use",
            ) from None
        self._lock_fd = fd
        try:
            await self.journal.open()
            await self._load()
        except BaseException:
            await self.close()
            raise

    async def _load(self) -> None:
        q = self.journal.query
        self.exchanges = {name for (name,) in await q("SELECT name FROM exchanges")}
        for (name,) in await q("SELECT name FROM queues"):
            self.queues[name] = MessageQueue(name)
        for exchange, queue, pattern in await q("SELECT exchange, queue, pattern FROM bindings"):
            self.bindings.setdefault(exchange, set()).add((queue, pattern))
        rows = await q(
            "SELECT seq, queue, exchange, routing_key, message_id, headers, body, deliveries"
            " FROM messages ORDER BY seq"
        )
        for seq, queue, exchange, key, message_id, headers, body, deliveries in rows:
            self._next_seq = max(self._next_seq, seq + 1)
            target = self.queues.setdefault(queue, MessageQueue(queue))
            target.ready.append(StoredMessage(seq, queue, exchange, key, message_id,
                                         json.loads(headers), bytes(body), deliveries))
        waiting = sum(len(q.ready) for q in self.queues.values()
                      if not q.name.endswith(".dlq"))
        if waiting:
            log.info("broker reopened with messages to deliver",
                     extra={"messages": waiting, "directory": str(self.directory)})

    async def declare_exchange(self, exchange: str) -> None:
        if exchange not in self.exchanges:
            await self.journal.write([("INSERT OR IGNORE INTO exchanges VALUES (?)", (exchange,))])
            self.exchanges.add(exchange)

    async def declare_queue(self, queue: str) -> MessageQueue:
        if queue not in self.queues:
            await self.journal.write([("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))])
            self.queues.setdefault(queue, MessageQueue(queue))
        return self.queues[queue]

    async def bind(self, exchange: str, queue: str, pattern: str) -> None:
        await self.declare_exchange(exchange)
        await self.declare_queue(queue)
        if (queue, pattern) not in self.bindings.get(exchange, set()):
            await self.journal.write(
                [("INSERT OR IGNORE INTO bindings VALUES (?, ?, ?)", (exchange, queue, pattern))]
            )
            self.bindings.setdefault(exchange, set()).add((queue, pattern))

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, message_id: str | None,
        headers: Mapping[str, Any], mandatory: bool,
    ) -> int:
        """Store the message in every queue it routes to; return how many."""
        await self.declare_exchange(exchange)
        targets = sorted({q for q, p in self.bindings.get(exchange, ()) if topic_matches(p, routing_key)})
        if not targets:
            if mandatory:
                raise TransientError(
                    f"no queue would receive the message for exchange {exchange!r}",
                    reason="unroutable",
                )
            return 0
        messages: list[StoredMessage] = []
        statements: list[Statement] = []
        encoded = json.dumps(dict(headers), default=str)
        for queue in targets:
            message = StoredMessage(self._next_seq, queue, exchange, routing_key, message_id,
                               dict(headers), body)
            self._next_seq += 1
            messages.append(message)
            statements.append((
                ("INSERT INTO messages (seq, queue, exchange, routing_key, message_id, headers,"
                " body) VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (message.seq, queue, exchange, routing_key, message_id, encoded, body),
            ))
        await self.journal.write(statements)
        for message in messages:
            self.queues[message.queue].put(message)
        return len(messages)

    async def delivered(self, message: StoredMessage) -> None:
        message.deliveries += 1
        await self.journal.write(
            [("UPDATE messages SET deliveries = ? WHERE seq = ?", (message.deliveries, message.seq))]
        )

    async def ack(self, message: StoredMessage) -> None:
        """Forget a message whose handler has finished."""
        await asyncio.shield(self.journal.write(
            [("DELETE FROM messages WHERE seq = ?", (message.seq,))]))
        self.queues[message.queue].unacked.pop(message.seq, None)

    async def move(self, message: StoredMessage, target: str, headers: dict[str, Any], *,
                   delay: float | None = None) -> None:
        """Move a message being handled to ``target`` with ``headers``; with ``delay``,
        it becomes ready there only after that many seconds."""
        source = self.queues[message.queue]
        queue = await self.declare_queue(target)
        await asyncio.shield(self.journal.write([(
            "UPDATE messages SET queue = ?, headers = ?, deliveries = 0 WHERE seq = ?",
            (target, json.dumps(headers, default=str), message.seq),
        )]))
        source.unacked.pop(message.seq, None)
        message.queue, message.headers, message.deliveries = target, headers, 0
        if delay is None:
            queue.put(message)
        else:
            queue.unacked[message.seq] = message
            self.requeue_later(message, delay)

    async def replay(self, dead: MessageQueue, messages: list[StoredMessage], target: str) -> None:
        """Send ready ``messages`` of dead-letter queue ``dead`` back to ``target``."""
        for message in messages:
            dead.ready.remove(message)
            dead.unacked[message.seq] = message
            try:
                await self.move(message, target, replay_headers(message.headers))
            except BaseException:
                dead.put(message, front=True)
                raise

    async def purge(self, queue: MessageQueue) -> int:
        """Delete the ready messages of ``queue``; how many."""
        doomed = {m.seq for m in queue.ready}
        if doomed:
            await self.journal.write([("DELETE FROM messages WHERE seq = ?", (seq,))
                                      for seq in sorted(doomed)])
            queue.ready = deque(m for m in queue.ready if m.seq not in doomed)
        return len(doomed)

    def requeue_later(self, message: StoredMessage, delay: float) -> None:
        def ready() -> None:
            self._timers.discard(timer)
            if message.queue in self.queues and self.users:
                self.queues[message.queue].put(message)

        timer = self.loop.call_later(delay, ready)
        self._timers.add(timer)

    def abandon(self) -> None:
        """Let go of a core whose event loop has ended without closing it."""
        self.journal.abandon()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        try:
            await self.journal.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


_CORES: dict[Path, BrokerCore] = {}
_OPENING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _opening_lock() -> asyncio.Lock:
    return _OPENING.setdefault(asyncio.get_running_loop(), asyncio.Lock())


async def open_core(directory: Path) -> BrokerCore:
    """The broker core of ``directory`` in this process, opened on first use."""
    async with _opening_lock():
        core = _CORES.get(directory)
        if core is not None and core.loop is not asyncio.get_running_loop():
            _CORES.pop(directory).abandon()
            core = None
        if core is None:
            core = BrokerCore(directory)
            await core.open()
            _CORES[directory] = core
        core.users += 1
        return core


async def release_core(core: BrokerCore) -> None:
    async with _opening_lock():
        core.users -= 1
        if core.users <= 0:
            if _CORES.get(core.directory) is core:
                del _CORES[core.directory]
            await core.close()
