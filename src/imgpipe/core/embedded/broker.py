"""An in-process message broker with RabbitMQ's semantics, kept on disk.

:class:`EmbeddedBroker` implements :class:`~imgpipe.core.messaging.Broker`
for services that share one process (``imgpipe dev``). What the services rely
on holds as with RabbitMQ:

* topic exchanges, durable queues bound with patterns (``#``, ``*``);
* ``publish`` returns once the message is in the journal on disk (the
  confirm); ``mandatory`` publishes that no queue would receive raise;
* a message stays in the journal until its handler returns (ack); what
  becomes of it otherwise is :func:`imgpipe.core.delivery.decide`'s answer,
  as with RabbitMQ: hold it while a backend is unavailable, retry it after
  the policy's delay with its attempt number raised, or move it to the
  stage's dead-letter queue (``imgpipe.E.dlq``) with the ``x-imgpipe-*``
  headers saying why;
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
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgpipe.core.delivery import (
    Action,
    Decision,
    RetryPolicy,
    attempt_of,
    dead_letter_headers,
    decide,
    retry_headers,
)
from imgpipe.core.embedded.journal import Journal, Statement
from imgpipe.core.errors import ConfigError, TransientError, Unavailable
from imgpipe.core.logs import job_context
from imgpipe.core.messaging import (
    HANDLING,
    MESSAGES,
    QUEUE_DEPTH,
    RETRY_DELAY,
    Consumer,
    Delivery,
    Handler,
    topology,
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
            "SELECT seq, queue, exchange, routing_key, message_id, headers, body, deliveries"
            " FROM messages ORDER BY seq"
        )
        for seq, queue, exchange, key, message_id, headers, body, deliveries in rows:
            self._next_seq = max(self._next_seq, seq + 1)
            target = self.queues.setdefault(queue, _Queue(queue))
            target.ready.append(_Message(seq, queue, exchange, key, message_id,
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
                    f"no queue would receive the message for exchange {exchange!r}",
                    reason="unroutable",
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

    async def settle(self, message: _Message, decision: Decision, attempt: int) -> None:
        """Apply ``decision`` to ``message`` once its handler has finished."""
        queue = self.queues[message.queue]
        if decision.action is Action.ACK:
            await asyncio.shield(self.journal.write(
                [("DELETE FROM messages WHERE seq = ?", (message.seq,))]))
            queue.unacked.pop(message.seq, None)
            return
        if decision.action is Action.RETRY:
            headers = retry_headers(message.headers, attempt + 1, decision)
            target = queue
        else:
            headers = dead_letter_headers(message.headers, attempt, queue.name, decision)
            target = await self.declare_queue(topology(queue.name).dead_letter_queue)
        await asyncio.shield(self.journal.write([(
            "UPDATE messages SET queue = ?, headers = ?, deliveries = 0 WHERE seq = ?",
            (target.name, json.dumps(headers, default=str), message.seq),
        )]))
        queue.unacked.pop(message.seq, None)
        message.queue, message.headers, message.deliveries = target.name, headers, 0
        if decision.action is Action.RETRY:
            target.unacked[message.seq] = message
            self.requeue_later(message, decision.delay)
        else:
            target.put(message)

    def requeue_later(self, message: _Message, delay: float) -> None:
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


def _job_of(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        return ""
    job = value.get("job_id") if isinstance(value, dict) else None
    return job if isinstance(job, str) else ""


class _EmbeddedConsumer:
    def __init__(self, core: BrokerCore, queue: _Queue, handler: Handler, prefetch: int,
                 policy: RetryPolicy) -> None:
        self._core = core
        self._queue = queue
        self._handler = handler
        self._policy = policy
        self._slots = asyncio.Semaphore(prefetch)
        self._inflight: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

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
        name = self._queue.name
        try:
            with job_context(_job_of(message.body)):
                await self._core.delivered(message)
                decision, attempt = await self._handle(message)
                if decision is None:
                    self._queue.put(message, front=True)
                    MESSAGES.labels(name, "returned").inc()
                    return
                self._log(message, decision, attempt)
                await self._core.settle(message, decision, attempt)
                MESSAGES.labels(name, _OUTCOMES[decision.action]).inc()
        except asyncio.CancelledError:
            self._queue.put(message, front=True)
            MESSAGES.labels(name, "returned").inc()
            raise
        except Exception:
            log.exception("message could not be settled; it will be delivered again")
            self._core.requeue_later(message, RETRY_DELAY)
        finally:
            self._slots.release()

    async def _handle(self, message: _Message) -> tuple[Decision | None, int]:
        """Run the handler (again while a backend is unavailable); None: stopped while held."""
        attempt = attempt_of(message.headers)
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            redelivered=message.deliveries > 1,
            headers=dict(message.headers),
            attempt=attempt,
            max_attempts=self._policy.max_attempts,
        )
        holds = 0
        while True:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - the decision below handles it
                error = exc
            HANDLING.labels(self._queue.name).observe(time.perf_counter() - started)
            decision = decide(error, attempt, self._policy, holds=holds)
            if decision.action is not Action.HOLD:
                return decision, attempt
            MESSAGES.labels(self._queue.name, "held").inc()
            log.warning("backend unavailable, holding the message for %.1fs: %s",
                        decision.delay, decision.message,
                        extra={"reason": decision.reason, "message_id": message.message_id})
            try:
                await asyncio.wait_for(self._stopping.wait(), decision.delay)
            except TimeoutError:
                holds += 1
                continue
            return None, attempt

    def _log(self, message: _Message, decision: Decision, attempt: int) -> None:
        extra = {"message_id": message.message_id, "attempt": attempt, "reason": decision.reason}
        if decision.action is Action.RETRY:
            log.warning("attempt %d failed, retrying in %.1fs: %s", attempt, decision.delay,
                        decision.message, extra=extra)
        elif decision.action is Action.DEAD_LETTER:
            log.error("message dead-lettered to %s: %s",
                      topology(self._queue.name).dead_letter_queue, decision.message, extra=extra)

    async def stop(self, grace: float) -> None:
        """Stop taking messages; after ``grace`` seconds, return unfinished ones."""
        self._stopping.set()
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


_OUTCOMES = {Action.ACK: "acked", Action.RETRY: "retried", Action.DEAD_LETTER: "dead_lettered"}


class EmbeddedBroker:
    """:class:`~imgpipe.core.messaging.Broker` kept in a local directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._core: BrokerCore | None = None
        self._consumers: list[_EmbeddedConsumer] = []
        self._queues: set[str] = set()

    async def connect(self) -> None:
        """Open the broker directory (shared with this process's other handles); idempotent."""
        if self._core is None:
            self._core = await open_core(self.directory)

    def _open_core(self) -> BrokerCore:
        if self._core is None:
            raise Unavailable("the embedded broker is not open", reason="broker_unavailable")
        return self._core

    async def declare_exchange(self, exchange: str) -> None:
        await self._open_core().declare_exchange(exchange)

    async def declare_work_queue(self, exchange: str, queue: str | None = None) -> str:
        """Declare ``exchange``, its durable work queue and dead-letter queue; return the queue."""
        name = queue or work_queue_name(exchange)
        core = self._open_core()
        await core.declare_queue(topology(name).dead_letter_queue)
        await core.bind(exchange, name, "#")
        self._queues.add(name)
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
        """Store the message durably in the queues it routes to (the confirm).

        A ``mandatory`` message that no queue would receive raises
        :class:`TransientError` (``unroutable``), as with RabbitMQ.
        """
        core = self._open_core()
        try:
            await core.publish(exchange, routing_key or "event", body, message_id,
                               headers or {}, mandatory)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            raise Unavailable(f"the embedded broker could not store the message: {exc}",
                              reason="broker_unavailable") from exc

    async def consume(
        self, queue: str, handler: Handler, *, prefetch: int, retry: RetryPolicy | None = None
    ) -> Consumer:
        """Consume ``queue`` with ``handler``, at most ``prefetch`` messages at a time."""
        core = self._open_core()
        consumer = _EmbeddedConsumer(core, await core.declare_queue(queue), handler, prefetch,
                                     retry or RetryPolicy())
        consumer.start()
        self._consumers.append(consumer)
        self._queues.add(queue)
        return consumer

    def counts(self, queue: str) -> dict[str, int]:
        """Messages of ``queue``: ready, being handled, and in its dead-letter queue."""
        queues = self._open_core().queues
        q, dlq = queues.get(queue), queues.get(topology(queue).dead_letter_queue)
        return {
            "ready": len(q.ready) if q else 0,
            "unacked": len(q.unacked) if q else 0,
            "dead": len(dlq.ready) + len(dlq.unacked) if dlq else 0,
        }

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each work queue and dead-letter queue this handle uses."""
        queues = self._open_core().queues
        depths = {}
        for queue in sorted(self._queues):
            for name in (queue, topology(queue).dead_letter_queue):
                q = queues.get(name)
                depths[name] = len(q.ready) + len(q.unacked) if q else 0
        return depths

    async def refresh_metrics(self) -> None:
        for name, depth in (await self.queue_depths()).items():
            QUEUE_DEPTH.labels(name).set(depth)

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
