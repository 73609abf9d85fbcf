"""What only the embedded backends promise: durability across a restart of the
process, one owner per broker directory, a browsable object layout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgpipe.broker.embedded import EmbeddedBroker
from imgpipe.broker.embedded_queues import topic_matches
from imgpipe.broker.open import open_broker
from imgpipe.broker.policy import REASON, RetryPolicy
from imgpipe.broker.protocol import Delivery
from imgpipe.errors import ConfigError, InvalidInput, PermanentError, TransientError
from imgpipe.provstore.mango import InvalidSelector, matches, sort_docs
from imgpipe.provstore.open import open_provenance_store
from imgpipe.provstore.sqlite import SqliteProvenanceStore
from imgpipe.runtime.config import AmqpSettings, CouchSettings, S3Settings, load
from imgpipe.runtime.fileurl import embedded_path, embedded_url
from imgpipe.storage.local import LocalStore
from imgpipe.storage.open import open_object_store
from imgpipe.upload.settings import UploadSettings
from tests.test_backend_contract import Inbox


async def _broker(directory: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(directory)
    await broker.connect()
    return broker


async def test_messages_survive_a_restart(tmp_path: Path) -> None:
    broker = await _broker(tmp_path)
    queue = await broker.declare_work_queue("uploaded")
    for n in range(3):
        await broker.publish("uploaded", f"job-{n}".encode(), message_id=f"m-{n}")
    held = Inbox()
    held.hold = asyncio.Event()
    await broker.consume(queue, held, prefetch=1)
    await held.wait_for(1)
    await broker.close()

    broker = await _broker(tmp_path)
    assert broker.counts(queue) == {"ready": 3, "unacked": 0, "dead": 0}
    inbox = Inbox()
    consumer = await broker.consume(queue, inbox, prefetch=3)
    deliveries = await inbox.wait_for(3)
    await consumer.stop(grace=5)
    assert [d.body for d in deliveries] == [b"job-0", b"job-1", b"job-2"]
    assert [d.redelivered for d in deliveries] == [True, False, False]
    assert broker.counts(queue) == {"ready": 0, "unacked": 0, "dead": 0}
    await broker.close()

    broker = await _broker(tmp_path)
    assert broker.counts(queue)["ready"] == 0
    await broker.close()


async def test_dead_letters_are_kept_and_not_redelivered(tmp_path: Path) -> None:
    broker = await _broker(tmp_path)
    queue = await broker.declare_work_queue("uploaded")
    inbox = Inbox(fail={b"bad": PermanentError("not an image", reason="not_an_image")})
    await broker.consume(queue, inbox, prefetch=1)
    await broker.publish("uploaded", b"bad", message_id="m-1")
    await broker.publish("uploaded", b"good", message_id="m-2")
    await inbox.wait_for(2)
    await broker.close()

    broker = await _broker(tmp_path)
    assert broker.counts(queue) == {"ready": 0, "unacked": 0, "dead": 1}
    refused = await asyncio.to_thread(_dlq, tmp_path, "list", "--exchange", "uploaded")
    assert refused.returncode == 1 and "in use by another process" in refused.stderr
    await broker.close()

    listed = await asyncio.to_thread(_dlq, tmp_path, "list", "--exchange", "uploaded")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("uploaded: 1 dead-lettered in imgpipe.uploaded.dlq")
    shown = await asyncio.to_thread(_dlq, tmp_path, "show", "--exchange", "uploaded")
    assert "not_an_image: not an image" in shown.stdout


def _dlq(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``imgpipe dlq ARGS`` in another process, on the embedded broker in ``directory``."""
    return subprocess.run([sys.executable, "-m", "imgpipe.cli", "dlq", *args], check=False,
                          env=os.environ | {"AMQP_URL": embedded_url(directory)},
                          capture_output=True, text=True, timeout=60)


async def test_a_retry_waiting_at_a_restart_keeps_its_attempt(tmp_path: Path) -> None:
    broker = await _broker(tmp_path)
    queue = await broker.declare_work_queue("uploaded")
    inbox = Inbox(fail={b"flaky": TransientError("S3 is down")})
    await broker.consume(queue, inbox, prefetch=1, retry=RetryPolicy(delays=(60.0,)))
    await broker.publish("uploaded", b"flaky", message_id="m-1")
    await inbox.wait_for(1)
    while broker.counts(queue)["unacked"] != 1 or not inbox.deliveries:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    await broker.close()

    broker = await _broker(tmp_path)
    again = Inbox()
    await broker.consume(queue, again, prefetch=1)
    [delivery] = await again.wait_for(1)
    await broker.close()
    assert (delivery.body, delivery.attempt, delivery.headers[REASON]) == (
        b"flaky", 2, "backend_unavailable")


async def test_services_of_one_process_share_the_broker(tmp_path: Path) -> None:
    settings = load(AmqpSettings, amqp_url=embedded_url(tmp_path))
    upload = await open_broker(settings, name="upload")
    runner = await open_broker(settings, name="runner")
    queue = await runner.declare_work_queue("uploaded")
    inbox = Inbox()
    await runner.consume(queue, inbox, prefetch=1)
    await upload.publish("uploaded", b"hello", message_id="m-1")
    [delivery] = await inbox.wait_for(1)
    assert isinstance(delivery, Delivery) and delivery.body == b"hello"
    await upload.close()
    await runner.close()


def test_another_process_cannot_open_the_same_broker(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from imgpipe.broker.embedded import EmbeddedBroker\n"
        "from imgpipe.errors import ConfigError\n"
        "async def main():\n"
        "    broker = EmbeddedBroker(Path(sys.argv[1]))\n"
        "    try:\n"
        "        await broker.connect()\n"
        "    except ConfigError as err:\n"
        "        print(err.reason, err.message)\n"
        "        return\n"
        "    print('opened')\n"
        "    await broker.close()\n"
        "asyncio.run(main())\n"
    )

    async def hold_and_try() -> str:
        broker = await _broker(tmp_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, str(tmp_path), stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            return out.decode()
        finally:
            await broker.close()

    out = asyncio.run(hold_and_try())
    assert out.startswith("broker_in_use")
    assert str(tmp_path) in out


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("#", "uploaded", True), ("#", "", True), ("job.*", "job.received", True),
        ("job.*", "job.received.x", False), ("job.#", "job", True), ("*.completed", "step.completed", True),
        ("a.#.z", "a.b.c.z", True), ("a.#.z", "a.b.c", False), ("event", "other", False),
    ],
)
def test_topic_patterns(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


async def test_objects_are_files_named_by_their_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.connect()
    await store.ensure_bucket("imgpipe-output")
    await store.put_bytes("imgpipe-output", "jobs/j1/thumbnail/abc.png", b"png",
                          content_type="image/png")
    assert (tmp_path / "imgpipe-output/jobs/j1/thumbnail/abc.png").read_bytes() == b"png"
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".imgpipe-tmp-")]
    for key in ("../escape", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(InvalidInput):
            await store.put_bytes("imgpipe-output", key, b"x", content_type="text/plain")
    with pytest.raises(InvalidInput):
        await store.head("..", "x")


async def test_provenance_survives_a_restart(tmp_path: Path) -> None:
    store = SqliteProvenanceStore(tmp_path, "provenance")
    await store.connect()
    assert await store.put("d1", {"job_id": "j1", "kind": "job.received"})
    await store.close()
    store = SqliteProvenanceStore(tmp_path, "provenance")
    await store.connect()
    assert not await store.put("d1", {"job_id": "j1", "kind": "other"})
    assert [d["kind"] for d in await store.find({"job_id": "j1"})] == ["job.received"]
    await store.close()


def test_mango_edge_cases() -> None:
    doc = {"tags": ["a", "b"], "n": 3, "agents": [{"name": "x", "version": "1"}], "z": None}
    assert matches(doc, {"tags": {"$all": ["b", "a"]}})
    assert matches(doc, {"tags": {"$size": 2}})
    assert matches(doc, {"tags": {"$in": ["b"]}})
    assert matches(doc, {"agents": {"$elemMatch": {"name": "x"}}})
    assert not matches(doc, {"agents": {"$elemMatch": {"name": "y"}}})
    assert matches(doc, {"n": {"$mod": [2, 1]}, "z": {"$type": "null"}})
    assert matches(doc, {"missing": {"$exists": False}})
    assert not matches(doc, {"missing": {"$ne": 1}})
    assert matches(doc, {"$nor": [{"n": 4}], "$not": {"n": 5}})
    assert matches(doc, {"n": {"$gt": None}})
    assert not matches(doc, {"n": {"$gt": "1"}})
    with pytest.raises(InvalidSelector):
        matches(doc, {"n": {"$near": 1}})
    docs = [{"t": 2}, {"t": "x"}, {}, {"t": 1}]
    assert sort_docs(docs, [{"t": "desc"}]) == [{"t": "x"}, {"t": 2}, {"t": 1}, {}]


def test_backend_urls_are_validated_by_name(tmp_path: Path) -> None:
    settings = load(UploadSettings, amqp_url=embedded_url(tmp_path / "b"),
                    s3_url="file:objects", couchdb_url=embedded_url(tmp_path / "p"))
    assert embedded_path(settings.s3_url) == Path("objects").resolve()
    with pytest.raises(ConfigError, match="S3_URL"):
        load(S3Settings, s3_url="ftp://somewhere")
    with pytest.raises(ConfigError, match="AMQP_URL"):
        load(AmqpSettings, amqp_url="http://127.0.0.1:5672")
    with pytest.raises(ConfigError, match="embedded"):
        load(CouchSettings, couchdb_url="couchdb")
    with pytest.raises(ConfigError, match="file:///path"):
        embedded_path("file://otherhost/dir")


async def test_file_urls_open_the_embedded_backends(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load(UploadSettings, amqp_url=embedded_url(data / "broker"),
                    s3_url=embedded_url(data / "objects"),
                    couchdb_url=embedded_url(data / "provenance"))
    broker = await open_broker(settings, name="test")
    store = await open_object_store(settings, buckets=(settings.s3_input_bucket,))
    provenance = await open_provenance_store(settings)
    try:
        assert isinstance(broker, EmbeddedBroker)
        await store.check()
        assert sorted(p.name for p in data.iterdir()) == ["broker", "objects", "provenance"]
        assert (data / "objects" / settings.s3_input_bucket).is_dir()
        assert (data / "provenance" / "provenance.sqlite3").exists()
    finally:
        await broker.close()
        await store.close()
        await provenance.close()
