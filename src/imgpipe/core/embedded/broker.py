"""An in-process message broker with RabbitMQ's semantics, kept on disk.

:class:`EmbeddedBroker` implements :class:`~imgpipe.core.messaging.Broker`
for services that share one process (``imgpipe dev``). What the services rely
on holds as with RabbitMQ:

* topic exchanges, durable queues bound with patterns (``#``, ``*``);
* ``publish`` returns once the message is in the journal on disk (the
  confirm); ``mandatory`` publishes that no queue would receive raise;
* a message stays in the journal until its handler returns (ack); a
  :class:`~imgpipe.core.errors.PermanentError` dead-letters it (kept, never
  redelivered); any other exception returns it for a retry after a delay;
* ``prefetch`` bounds the handlers running at once per consumer; stopping a
  consumer returns the messages it had not finished;
* messages not acked when the process stops are delivered again, marked
  redelivered, when the broker opens the same directory again.

One process owns a broker directory at a time (a lock file says so); the
services of that process share it through :func:`open_core`.
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

from imgpipe.core.delivery import RetryPolicy
from imgpipe.core.embedded.journal import Journal, Statement
from imgpipe.core.errors import ConfigError, TransientError
from imgpipe.core.messaging import (
    RETRY_DELAY,
    Consumer,
    Delivery,
    Handler,
    Outcome,
    outcome_of,
    work_queue_name,
)

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
class _Message:
    seq: int
    queue: str
    exchange: str
    routing_key: str
    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    deliveries: int = 0


@dataclass(eq=False)
class _Queue:
    name: str
    ready: deque[_Message] = field(default_factory=deque)
    unacked: dict[int, _Message] = field(default_factory=dict)
    dead: int = 0
    waiters: deque[asyncio.Future[_Message]] = field(default_factory=deque)

    async def get(self) -> _Message:
        """The next ready message, waiting for one; it counts as unacked from then on."""
        if self.ready:
            message = self.ready.popleft()
        else:
            waiter: asyncio.Future[_Message] = asyncio.get_running_loop().create_future()
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

    def put(self, message: _Message, *, front: bool = False) -> None:
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
        self.queues: dict[str, _Queue] = {}
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
            self.queues[name] = _Queue(name)
        for exchange, queue, pattern in await q("SELECT exchange, queue, pattern FROM bindings"):
            self.bindings.setdefault(exchange, set()).add((queue, pattern))
        rows = await q(
            "SELECT seq, queue, exchange, routing_key, message_id, headers, body, deliveries,"
            " dead_reason FROM messages ORDER BY seq"
        )
        for seq, queue, exchange, key, message_id, headers, body, deliveries, dead in rows:
            self._next_seq = max(self._next_seq, seq + 1)
            target = self.queues.setdefault(queue, _Queue(queue))
            if dead is not None:
                target.dead += 1
                continue
            target.ready.append(_Message(seq, queue, exchange, key, message_id,
                                         json.loads(headers), bytes(body), deliveries))
        waiting = sum(len(q.ready) for q in self.queues.values())
        if waiting:
            log.info("broker reopened with messages to deliver",
                     extra={"messages": waiting, "directory": str(self.directory)})

    async def declare_exchange(self, exchange: str) -> None:
        if exchange not in self.exchanges:
            await self.journal.write([("INSERT OR IGNORE INTO exchanges VALUES (?)", (exchange,))])
            self.exchanges.add(exchange)

    async def declare_queue(self, queue: str) -> _Queue:
        if queue not in self.queues:
            await self.journal.write([("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))])
            self.queues.setdefault(queue, _Queue(queue))
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
                    f"no queue is bound to exchange {exchange!r} for {routing_key!r}",
                    reason="broker_refused",
                )
            return 0
        messages: list[_Message] = []
        statements: list[Statement] = []
        encoded = json.dumps(dict(headers), default=str)
        for queue in targets:
            message = _Message(self._next_seq, queue, exchange, routing_key, message_id,
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

    async def delivered(self, message: _Message) -> None:
        message.deliveries += 1
        await self.journal.write(
            [("UPDATE messages SET deliveries = ? WHERE seq = ?", (message.deliveries, message.seq))]
        )

    async def settle(self, message: _Message, outcome: Outcome, reason: str = "") -> None:
        """Ack, dead-letter or return ``message`` after its handler finished."""
        queue = self.queues[message.queue]
        statement: Statement
        if outcome is Outcome.ACK:
            statement = ("DELETE FROM messages WHERE seq = ?", (message.seq,))
        elif outcome is Outcome.REJECT:
            statement = ("UPDATE messages SET dead_reason = ? WHERE seq = ?",
                         (reason or "rejected", message.seq))
        else:
            self.requeue_later(message, RETRY_DELAY)
            return
        await asyncio.shield(self.journal.write([statement]))
        queue.unacked.pop(message.seq, None)
        if outcome is Outcome.REJECT:
            queue.dead += 1

    def requeue_later(self, message: _Message, delay: float) -> None:
        def ready() -> None:
            self._timers.discard(timer)
            if message.queue in self.queues and self.users:
                self.queues[message.queue].put(message, front=True)

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


class _EmbeddedConsumer:
    def __init__(self, core: BrokerCore, queue: _Queue, handler: Handler, prefetch: int) -> None:
        self._core = core
        self._queue = queue
        self._handler = handler
        self._slots = asyncio.Semaphore(prefetch)
        self._inflight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"consume-{self._queue.name}")

    async def _dispatch(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                message = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._process(message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _process(self, message: _Message) -> None:
        try:
            await self._core.delivered(message)
            delivery = Delivery(
                body=message.body,
                message_id=message.message_id,
                redelivered=message.deliveries > 1,
                headers=dict(message.headers),
                attempt=message.deliveries,
            )
            error: BaseException | None = None
            try:
                await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - the outcome decides
                error = exc
            outcome = outcome_of(error)
            if outcome is Outcome.REJECT:
                log.warning("message rejected: %s", error, extra={"message_id": message.message_id})
            elif outcome is Outcome.RETRY:
                log.warning("message returned for retry: %s", error,
                            extra={"message_id": message.message_id})
            await self._core.settle(message, outcome, str(getattr(error, "reason", "") or ""))
        except asyncio.CancelledError:
            self._queue.put(message, front=True)
            raise
        except Exception:
            log.exception("message could not be settled; it will be delivered again")
            self._core.requeue_later(message, RETRY_DELAY)
        finally:
            self._slots.release()

    async def stop(self, grace: float) -> None:
        """Stop taking messages; after ``grace`` seconds, return unfinished ones."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)


class EmbeddedBroker:
    """:class:`~imgpipe.core.messaging.Broker` kept in a local directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._core: BrokerCore | None = None
        self._consumers: list[_EmbeddedConsumer] = []

    async def connect(self) -> None:
        """Open the broker directory (shared with this process's other handles); idempotent."""
        if self._core is None:
            self._core = await open_core(self.directory)

    def _open_core(self) -> BrokerCore:
        if self._core is None:
            raise TransientError("the embedded broker is closed", reason="broker_unavailable")
        return self._core

    async def declare_exchange(self, exchange: str) -> None:
        await self._open_core().declare_exchange(exchange)

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange`` and a durable queue bound to it; return the queue name."""
        name = queue or work_queue_name(exchange)
        await self._open_core().bind(exchange, name, "#")
        return name

    async def publish(
        self,
        exchange: str,
        body: bytes,
        *,
        message_id: str,
        routing_key: str = "",
        mandatory: bool = True,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the message durably in the queues it routes to (the confirm)."""
        core = self._open_core()
        try:
            await core.publish(exchange, routing_key or "event", body, message_id,
                               headers or {}, mandatory)
        except (OSError, RuntimeError) as exc:
            raise TransientError(f"the embedded broker could not store the message: {exc}",
                                 reason="broker_unavailable") from exc

    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int, retry: RetryPolicy | None = None
    ) -> Consumer:
        core = self._open_core()
        consumer = _EmbeddedConsumer(core, await core.declare_queue(queue), handler, prefetch)
        consumer.start()
        self._consumers.append(consumer)
        return consumer

    def counts(self, queue: str) -> dict[str, int]:
        """Messages of ``queue``: ready, being handled, and dead-lettered."""
        q = self._open_core().queues.get(queue)
        if q is None:
            return {"ready": 0, "unacked": 0, "dead": 0}
        return {"ready": len(q.ready), "unacked": len(q.unacked), "dead": q.dead}

    async def check(self) -> None:
        self._open_core()

    async def close(self) -> None:
        """Stop this handle's consumers (returning their messages) and release the broker."""
        for consumer in self._consumers:
            await consumer.stop(grace=0)
        self._consumers.clear()
        if self._core is not None:
            core, self._core = self._core, None
            await release_core(core)
