"""What the services rely on of each backend, checked on both backend sets.

Every test runs twice: on the embedded backends and on the real servers, so
the embedded ones cannot drift from the behaviour the services expect.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator

import pytest

from imgpipe.broker.policy import ATTEMPT, ERROR, HISTORY, QUEUE, REASON, RetryPolicy
from imgpipe.broker.protocol import Broker, Delivery
from imgpipe.broker.topology import topology
from imgpipe.cli import build_parser
from imgpipe.commands.dlq import run_dlq
from imgpipe.errors import PermanentError, TransientError, Unavailable
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.config import AmqpSettings
from imgpipe.storage.protocol import ObjectNotFound, ObjectStore
from imgpipe.testing.names import RunNames
from tests.backend_sets import TEST_DELAYS, settings_of

WAIT = 30.0


class Inbox:
    """A handler that records deliveries and can be told how to answer."""

    def __init__(self, fail: dict[bytes, BaseException] | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self.fail = dict(fail or {})
        self.changed = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self.running = 0
        self.most_running = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            self.deliveries.append(delivery)
            self.changed.set()
            if self.hold is not None:
                await self.hold.wait()
            error = self.fail.pop(delivery.body, None)
            if error is not None:
                raise error
        finally:
            self.running -= 1

    async def wait_for(self, count: int) -> list[Delivery]:
        async def until() -> None:
            while len(self.deliveries) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), WAIT)
        return self.deliveries


# --------------------------------------------------------------------------- broker


async def test_published_message_is_delivered_once_and_acked(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    await broker.publish(exchange, b"one", message_id="m-1", headers={"x-test": "yes"})
    inbox = Inbox()
    consumer = await broker.consume(queue, inbox, prefetch=4)
    [delivery] = await inbox.wait_for(1)
    await consumer.stop(grace=5)
    assert delivery.body == b"one"
    assert delivery.message_id == "m-1"
    assert not delivery.redelivered
    assert delivery.headers.get("x-test") == "yes"

    again = Inbox()
    await broker.publish(exchange, b"two", message_id="m-2")
    consumer = await broker.consume(queue, again, prefetch=4)
    await again.wait_for(1)
    await consumer.stop(grace=5)
    assert [d.body for d in again.deliveries] == [b"two"]


async def test_mandatory_publish_without_a_queue_is_refused(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_PUBLISH"]
    await broker.declare_exchange(exchange)
    with pytest.raises(TransientError):
        await broker.publish(exchange, b"nobody", message_id="m-1")
    await broker.publish(exchange, b"nobody", message_id="m-2", mandatory=False)


async def test_every_bound_queue_gets_a_copy(
    broker: Broker, backend_env: dict[str, str], unique_name: str
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_PROV"]
    first = await broker.declare_work_queue(exchange)
    second = await broker.declare_work_queue(exchange, RunNames(unique_name).extra_queue)
    await broker.publish(exchange, b"both", message_id="m-1")
    inboxes = [Inbox(), Inbox()]
    consumers = [await broker.consume(q, i, prefetch=1) for q, i in zip((first, second), inboxes, strict=True)]
    for inbox in inboxes:
        assert [d.body for d in await inbox.wait_for(1)] == [b"both"]
    for consumer in consumers:
        await consumer.stop(grace=5)


async def test_a_failed_handler_gets_the_message_again(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    inbox = Inbox(fail={b"flaky": TransientError("S3 is down")})
    consumer = await broker.consume(queue, inbox, prefetch=2)
    await broker.publish(exchange, b"flaky", message_id="m-1")
    first, second = await inbox.wait_for(2)
    await consumer.stop(grace=5)
    assert first.body == second.body == b"flaky"
    assert not first.redelivered
    assert (first.attempt, second.attempt) == (1, 2)


async def test_a_permanent_failure_is_not_delivered_again(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    inbox = Inbox(fail={b"broken": PermanentError("not an image")})
    consumer = await broker.consume(queue, inbox, prefetch=1)
    await broker.publish(exchange, b"broken", message_id="m-1")
    await inbox.wait_for(1)
    await broker.publish(exchange, b"after", message_id="m-2")
    await inbox.wait_for(2)
    await consumer.stop(grace=5)
    assert [d.body for d in inbox.deliveries] == [b"broken", b"after"]


async def test_attempts_are_bounded_then_the_message_is_dead_lettered(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    seen: list[Delivery] = []

    async def always_failing(delivery: Delivery) -> None:
        seen.append(delivery)
        raise TransientError("imageproc answered 500", reason="imageproc_error")

    policy = RetryPolicy(delays=TEST_DELAYS)
    consumer = await broker.consume(queue, always_failing, prefetch=1, retry=policy)
    await broker.publish(exchange, b"doomed", message_id="m-1", headers={"x-own": "kept"})
    dead = Inbox()
    dlq = await broker.consume(topology(queue).dead_letter_queue, dead, prefetch=1)
    [letter] = await dead.wait_for(1)
    await consumer.stop(grace=5)
    await dlq.stop(grace=5)
    assert [(d.attempt, d.final) for d in seen] == [(1, False), (2, False), (3, True)]
    assert letter.body == b"doomed"
    assert letter.headers[ATTEMPT] == 3
    assert letter.headers[REASON] == "imageproc_error"
    assert letter.headers[QUEUE] == queue
    assert "gave up after 3 attempts" in letter.headers[ERROR]
    assert letter.headers["x-own"] == "kept"


async def test_a_permanent_failure_goes_to_the_dead_letter_queue_at_once(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    inbox = Inbox(fail={b"broken": PermanentError("not an image", reason="not_an_image")})
    consumer = await broker.consume(queue, inbox, prefetch=1)
    await broker.publish(exchange, b"broken", message_id="m-1")
    dead = Inbox()
    dlq = await broker.consume(topology(queue).dead_letter_queue, dead, prefetch=1)
    [letter] = await dead.wait_for(1)
    await consumer.stop(grace=5)
    await dlq.stop(grace=5)
    assert len(inbox.deliveries) == 1
    assert (letter.headers[REASON], letter.headers[ATTEMPT]) == ("not_an_image", 1)


async def test_an_unavailable_backend_holds_the_message_without_spending_attempts(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    seen: list[Delivery] = []

    async def down_twice(delivery: Delivery) -> None:
        seen.append(delivery)
        if len(seen) <= 2:
            raise Unavailable("CouchDB is down")

    done = Inbox()

    async def handler(delivery: Delivery) -> None:
        await down_twice(delivery)
        await done(delivery)

    consumer = await broker.consume(queue, handler, prefetch=1,
                                    retry=RetryPolicy(delays=TEST_DELAYS))
    await broker.publish(exchange, b"patient", message_id="m-1")
    await done.wait_for(1)
    await consumer.stop(grace=5)
    assert [d.attempt for d in seen] == [1, 1, 1]


async def test_prefetch_bounds_the_handlers_running_at_once(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    for n in range(5):
        await broker.publish(exchange, f"m{n}".encode(), message_id=f"m-{n}")
    inbox = Inbox()
    inbox.hold = asyncio.Event()
    consumer = await broker.consume(queue, inbox, prefetch=2)
    await inbox.wait_for(2)
    await asyncio.sleep(0.3)
    assert inbox.running == 2
    inbox.hold.set()
    await inbox.wait_for(5)
    await consumer.stop(grace=5)
    assert inbox.most_running == 2
    assert sorted(d.body for d in inbox.deliveries) == [f"m{n}".encode() for n in range(5)]


async def test_stopping_returns_unfinished_messages(
    broker: Broker, backend_env: dict[str, str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    await broker.publish(exchange, b"slow", message_id="m-1")
    stuck = Inbox()
    stuck.hold = asyncio.Event()
    consumer = await broker.consume(queue, stuck, prefetch=1)
    await stuck.wait_for(1)
    await consumer.stop(grace=0.1)
    inbox = Inbox()
    consumer = await broker.consume(queue, inbox, prefetch=1)
    [delivery] = await inbox.wait_for(1)
    await consumer.stop(grace=5)
    assert delivery.body == b"slow"
    assert delivery.redelivered


async def test_check_passes_while_open(broker: Broker) -> None:
    await broker.check()


async def _dlq(backend_env: dict[str, str], *argv: str) -> tuple[int, str]:
    """``imgpipe dlq ARGV`` in this process (it shares an embedded broker's directory)."""
    out = io.StringIO()
    args = build_parser().parse_args(["dlq", *argv])
    code = await run_dlq(args, settings_of(AmqpSettings, backend_env), out)
    return code, out.getvalue()


async def test_dead_letters_can_be_listed_shown_replayed_and_purged(
    broker: Broker, backend_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = backend_env["AMQP_EXCHANGE_SUBSCRIBE"]
    queue = await broker.declare_work_queue(exchange)
    replayed = Inbox()

    async def handler(delivery: Delivery) -> None:
        if delivery.headers.get("x-imgpipe-replays"):
            await replayed(delivery)
            return
        raise PermanentError(f"cannot read {json.loads(delivery.body)['job_id']}",
                             reason="undecodable")

    for n in range(3):
        await broker.publish(exchange, json.dumps({"job_id": f"job{n}", "kind": "uploaded"})
                             .encode(), message_id=f"m{n}")
    consumer = await broker.consume(queue, handler, prefetch=4)
    dlq = topology(queue).dead_letter_queue
    while await broker.queue_depth(dlq) != 3:
        await asyncio.sleep(0.05)
    assert await broker.queue_depth(f"{queue}-none") is None

    code, text = await _dlq(backend_env, "list", "--exchange", exchange)
    assert (code, text) == (0, f"{exchange}: 3 dead-lettered in {dlq}, 0 waiting in {queue}\n")
    code, text = await _dlq(backend_env, "show", "--exchange", exchange, "--json")
    letters = json.loads(text)
    assert [letter["job_id"] for letter in letters] == ["job0", "job1", "job2"]
    assert {letter["reason"] for letter in letters} == {"undecodable"}
    assert "cannot read job1" in letters[1]["error"]
    assert await broker.queue_depth(dlq) == 3  # showing takes nothing
    code, text = await _dlq(backend_env, "show", "--exchange", exchange)
    assert "undecodable: cannot read job0" in text

    code, text = await _dlq(backend_env, "replay", "--exchange", exchange, "--id", "job1")
    assert code == 0 and "replayed 1 message" in text
    [back] = await replayed.wait_for(1)
    assert json.loads(back.body)["job_id"] == "job1" and back.attempt == 1
    assert json.loads(back.headers[HISTORY])[0]["reason"] == "undecodable"
    await consumer.stop(grace=5)
    assert [d.job_id for d in await broker.dead_letters(queue, 10)] == ["job0", "job2"]

    code, _ = await _dlq(backend_env, "purge", "--exchange", exchange)
    assert code == 2 and "2 message" in capsys.readouterr().err
    code, text = await _dlq(backend_env, "purge", "--exchange", exchange, "--yes")
    assert code == 0 and "purged 2" in text
    assert await broker.dead_letters(queue, 10) == []
    code, _ = await _dlq(backend_env, "show", "--exchange", f"{exchange}-none")
    assert code == 1 and "no dead-letter queue" in capsys.readouterr().err


# --------------------------------------------------------------------------- object store


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_objects_round_trip_with_metadata(
    object_store: ObjectStore, backend_env: dict[str, str]
) -> None:
    bucket = backend_env["S3_INPUT_BUCKET"]
    stored = await object_store.put_stream(
        bucket, "uploads/abc", _chunks(b"hello ", b"world"), content_type="image/png",
        metadata={"job-id": "abc", "filename": "cat.png"},
    )
    assert stored.size == 11
    assert stored.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert await object_store.get_bytes(bucket, "uploads/abc") == b"hello world"
    assert b"".join([c async for c in object_store.iter_bytes(bucket, "uploads/abc")]) == b"hello world"
    info = await object_store.head(bucket, "uploads/abc")
    assert info is not None
    assert (info.size, info.content_type) == (11, "image/png")
    assert info.metadata == {"job-id": "abc", "filename": "cat.png"}
    await object_store.check()


async def test_missing_objects(object_store: ObjectStore, backend_env: dict[str, str]) -> None:
    bucket = backend_env["S3_OUTPUT_BUCKET"]
    assert await object_store.head(bucket, "jobs/none/x.png") is None
    with pytest.raises(ObjectNotFound):
        await object_store.get_bytes(bucket, "jobs/none/x.png")
    await object_store.delete(bucket, "jobs/none/x.png")


async def test_overwrite_list_and_delete(
    object_store: ObjectStore, backend_env: dict[str, str]
) -> None:
    bucket = backend_env["S3_OUTPUT_BUCKET"]
    for key in ("jobs/b/thumb/2.png", "jobs/a/thumb/1.png", "jobs/a/dither/1.png", "other"):
        await object_store.put_bytes(bucket, key, key.encode(), content_type="image/png")
    stored = await object_store.put_bytes(bucket, "other", b"v2", content_type="text/plain")
    assert stored.size == 2
    assert await object_store.get_bytes(bucket, "other") == b"v2"
    assert await object_store.list_keys(bucket, "jobs/") == [
        "jobs/a/dither/1.png", "jobs/a/thumb/1.png", "jobs/b/thumb/2.png",
    ]
    await object_store.delete(bucket, "jobs/a/thumb/1.png")
    assert await object_store.list_keys(bucket, "jobs/a") == ["jobs/a/dither/1.png"]


async def test_listing_streams_in_byte_order_after_a_key(
    object_store: ObjectStore, backend_env: dict[str, str]
) -> None:
    bucket = backend_env["S3_INPUT_BUCKET"]
    keys = ["a-b", "a/b/c.png", "a/b0", "a/c", "a.png", "b", "ab/x", "z/y/x/w"]
    for key in keys:
        await object_store.put_bytes(bucket, key, key.encode() * 3, content_type="image/png")

    async def listed(prefix: str = "", after: str = "") -> list[str]:
        return [o.key async for o in object_store.iter_objects(bucket, prefix, start_after=after)]

    # S3 lists in byte order; SeaweedFS lists directory by directory ("a/..." before
    # "a-b"). Either way a listing continued after a key is the rest of the same order.
    ordered = await listed()
    assert sorted(ordered) == sorted(keys) and ordered == await object_store.list_keys(bucket)
    for after in keys:
        assert await listed(after=after) == ordered[ordered.index(after) + 1:], after
    assert await listed("a/") == ["a/b/c.png", "a/b0", "a/c"]
    assert await listed("a/b") == ["a/b/c.png", "a/b0"]
    assert await listed("a", after="a/b0") == [k for k in ordered if k.startswith("a")][
        [k for k in ordered if k.startswith("a")].index("a/b0") + 1:]
    first = [o async for o in object_store.iter_objects(bucket, "b")]
    assert [(o.key, o.size) for o in first] == [("b", 3)] and first[0].etag
    await object_store.put_bytes(bucket, "b", b"changed", content_type="image/png")
    again = [o async for o in object_store.iter_objects(bucket, "b")]
    assert again[0].etag != first[0].etag
    with pytest.raises(ObjectNotFound):
        await anext(object_store.iter_objects(bucket + "-none"))


async def test_a_failed_stream_leaves_the_previous_object(
    object_store: ObjectStore, backend_env: dict[str, str]
) -> None:
    bucket = backend_env["S3_INPUT_BUCKET"]
    await object_store.put_bytes(bucket, "uploads/keep", b"old", content_type="image/png")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new bytes that never finish"
        raise ValueError("client went away")

    with pytest.raises(ValueError):
        await object_store.put_stream(bucket, "uploads/keep", broken(), content_type="image/png")
    with pytest.raises(ValueError):
        await object_store.put_stream(bucket, "uploads/never", broken(), content_type="image/png")
    assert await object_store.get_bytes(bucket, "uploads/keep") == b"old"
    assert await object_store.head(bucket, "uploads/never") is None
    assert await object_store.list_keys(bucket) == ["uploads/keep"]


# --------------------------------------------------------------------------- provenance store

SHA_A, SHA_B, SHA_C = ("a" * 64, "b" * 64, "c" * 64)


def _doc(job: str, kind: str, time: str, **extra: object) -> dict[str, object]:
    return {"type": "imgpipe.provenance", "job_id": job, "kind": kind, "time": time,
            "stage": "thumbnail", **extra}


@pytest.fixture
async def records(provenance_store: ProvenanceStore) -> ProvenanceStore:
    docs = {
        "j1-received": _doc("j1", "job.received", "2025-01-01T00:00:01Z",
                            input={"sha256": SHA_A, "size": 10}, pipelines=["thumbnail"]),
        "j1-completed": _doc("j1", "step.completed", "2025-01-01T00:00:03Z",
                             input={"sha256": SHA_A}, output={"sha256": SHA_B, "size": 4},
                             attempt=1),
        "j2-received": _doc("j2", "job.received", "2025-01-01T00:00:02Z",
                            input={"sha256": SHA_B}),
        "j2-failed": _doc("j2", "step.failed", "2025-01-01T00:00:04Z",
                          input={"sha256": SHA_B}, reason="not_an_image", attempt=3),
    }
    for doc_id, doc in docs.items():
        assert await provenance_store.put(doc_id, doc)
    return provenance_store


def _ids(docs: list[dict[str, object]]) -> list[str]:
    return sorted(str(d["_id"]) for d in docs)


async def test_documents_are_written_once(records: ProvenanceStore) -> None:
    assert not await records.put("j1-received", _doc("j1", "job.received", "later"))
    doc = await records.get("j1-received")
    assert doc is not None
    assert doc["_id"] == "j1-received"
    assert doc["time"] == "2025-01-01T00:00:01Z"
    assert doc["input"] == {"sha256": SHA_A, "size": 10}
    assert await records.get("nothing-here") is None
    await records.check()


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"job_id": "j1"}, ["j1-completed", "j1-received"]),
        ({"input.sha256": SHA_B}, ["j2-failed", "j2-received"]),
        ({"output.sha256": SHA_B}, ["j1-completed"]),
        ({"output": {"sha256": SHA_B}}, ["j1-completed"]),
        ({"job_id": "j2", "kind": "step.failed"}, ["j2-failed"]),
        ({"kind": {"$in": ["step.completed", "step.failed"]}}, ["j1-completed", "j2-failed"]),
        ({"attempt": {"$gt": 1}}, ["j2-failed"]),
        ({"reason": {"$exists": True}}, ["j2-failed"]),
        ({"job_id": "j1", "output": {"$exists": False}}, ["j1-received"]),
        ({"$or": [{"output.sha256": SHA_A}, {"input.sha256": SHA_A}]},
         ["j1-completed", "j1-received"]),
        ({"job_id": {"$ne": "j1"}}, ["j2-failed", "j2-received"]),
        ({"time": {"$gte": "2025-01-01T00:00:02Z", "$lt": "2025-01-01T00:00:04Z"}},
         ["j1-completed", "j2-received"]),
        ({"input.sha256": SHA_C}, []),
    ],
)
async def test_find_selects_like_couchdb(
    records: ProvenanceStore, selector: dict[str, object], expected: list[str]
) -> None:
    assert _ids(await records.find(selector)) == expected


async def test_find_limits(records: ProvenanceStore) -> None:
    assert len(await records.find({"type": "imgpipe.provenance"}, limit=3)) == 3


async def test_changes_feed_continues_from_a_position(provenance_store: ProvenanceStore) -> None:
    """The feed SSE is made from: positions are opaque, resumable, and give each document once."""
    await provenance_store.put("early", _doc("j0", "job.received", "2025-01-01T00:00:00Z"))
    docs, now = await provenance_store.changes(None)
    assert docs == []
    for n in range(5):
        assert await provenance_store.put(f"doc-{n}", _doc(f"j{n}", "job.received", "t"))
    assert not await provenance_store.put("doc-1", _doc("j1", "job.received", "again"))
    first, middle = await provenance_store.changes(now, limit=2)
    rest, end = await provenance_store.changes(middle, limit=100)
    assert [d["_id"] for d in first + rest] == [f"doc-{n}" for n in range(5)]
    assert rest[0]["job_id"] == "j2" and first[1]["time"] == "t"
    assert await provenance_store.changes(end) == ([], end)
    assert (await provenance_store.changes(None))[1] == end
    assert await provenance_store.put("late", _doc("j9", "step.started", "t"))
    assert [d["_id"] for d in (await provenance_store.changes(end))[0]] == ["late"]


async def test_pages_read_every_match_once(provenance_store: ProvenanceStore,
                                           unique_name: str) -> None:
    """Reads with no upper bound (a large job's records) come a page at a time (CouchDB:
    ``_find`` bookmarks), every match once."""
    for n in range(23):
        assert await provenance_store.put(f"{unique_name}-{n:03d}", {"job_id": unique_name, "n": n})
    await provenance_store.put(f"{unique_name}-other", {"job_id": f"{unique_name}-other"})
    pages = [page async for page in provenance_store.pages({"job_id": unique_name}, page_size=5)]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert sorted(doc["n"] for page in pages for doc in page) == list(range(23))
    assert [page async for page in provenance_store.pages({"job_id": "nobody"})] == []
