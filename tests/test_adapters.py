"""The backend adapters against real servers: S3, RabbitMQ, CouchDB."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from imgpipe.broker.policy import RetryPolicy
from imgpipe.broker.protocol import Delivery
from imgpipe.broker.rabbitmq import AmqpBroker
from imgpipe.errors import PermanentError, TransientError, Unavailable
from imgpipe.provstore.couch import CouchStore
from imgpipe.runtime.config import CouchSettings, S3Settings
from imgpipe.storage.protocol import ObjectNotFound
from imgpipe.storage.s3 import S3Store
from imgpipe.testing.servers.base import free_port


def s3_settings(server: Any, **extra: Any) -> S3Settings:
    values: dict[str, Any] = {"s3_url": server.url, "s3_access_key": server.access_key,
                              "s3_secret_key": SecretStr(server.secret_key)}
    return S3Settings(**(values | extra))


@pytest.fixture
async def s3(s3_server: Any, unique_name: str) -> AsyncIterator[S3Store]:
    store = S3Store(s3_settings(s3_server), part_size=5 * 1024 * 1024)
    await store.connect()
    await store.ensure_bucket(unique_name)
    yield store
    await store.close()


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_stream_small_and_multipart_objects(s3: S3Store, unique_name: str) -> None:
    for name, size in (("small", 1000), ("large", 11 * 1024 * 1024 + 7)):
        data = os.urandom(size)
        stored = await s3.put_stream(unique_name, name, _chunks(data), content_type="image/png",
                                     metadata={"job-id": "j1"})
        assert stored.size == size
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert await s3.get_bytes(unique_name, name) == data
        info = await s3.head(unique_name, name)
        assert info is not None and info.size == size and info.metadata["job-id"] == "j1"
    assert sorted(await s3.list_keys(unique_name)) == ["large", "small"]


async def test_failed_stream_leaves_no_object(s3: S3Store, unique_name: str) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(6 * 1024 * 1024)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await s3.put_stream(unique_name, "half", broken(), content_type="image/png")
    assert await s3.head(unique_name, "half") is None
    assert await s3.list_keys(unique_name) == []


async def test_missing_object_and_wrong_keys(s3_server: Any, s3: S3Store, unique_name: str) -> None:
    with pytest.raises(ObjectNotFound):
        await s3.get_bytes(unique_name, "nope")
    wrong = S3Store(s3_settings(s3_server, s3_secret_key=SecretStr("wrong")))
    await wrong.connect()
    try:
        with pytest.raises(TransientError):
            await wrong.put_bytes(unique_name, "x", b"x", content_type="image/png")
    finally:
        await wrong.close()


async def test_a_whole_object_put_keeps_type_and_metadata_and_refuses_a_changed_body(
        s3: S3Store, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(15_000)
    await s3.put_stream(unique_name, "one", _chunks(data), content_type="image/jpeg",
                        metadata={"job-id": "j2", "filename": "a b.jpg"})
    info = await s3.head(unique_name, "one")
    assert info is not None and (info.size, info.content_type) == (15_000, "image/jpeg")
    assert info.metadata == {"job-id": "j2", "filename": "a b.jpg"}
    large = os.urandom(3 * 1024 * 1024)  # one PUT still (parts start at 8 MB), over 1 MiB
    stored = await s3.put_stream(unique_name, "large", _chunks(large), content_type="image/png")
    assert stored.sha256 == hashlib.sha256(large).hexdigest()
    assert await s3.get_bytes(unique_name, "large") == large
    # a body that is not the one whose sha256 was signed: S3 refuses it, nothing is stored
    assert s3._direct is not None
    with pytest.raises(TransientError) as refused:
        await s3._direct.put(unique_name, "changed", data, content_type="image/jpeg",
                             metadata={}, sha256=hashlib.sha256(data + b"x").digest())
    assert refused.value.reason == "storage_error"
    assert await s3.head(unique_name, "changed") is None


async def test_a_put_to_an_unreachable_s3_is_unavailable(unique_name: str) -> None:
    closed = S3Store(S3Settings(s3_url=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(Unavailable) as down:
            await closed.put_bytes(unique_name, "x", b"x", content_type="image/png")
        assert down.value.reason == "storage_unavailable"
    finally:
        await closed.close()


@pytest.fixture
def broker(rabbitmq_broker: AmqpBroker) -> AmqpBroker:
    """This module's broker is RabbitMQ (the session's)."""
    return rabbitmq_broker


async def test_publish_consume_and_outcomes(broker: AmqpBroker, unique_name: str) -> None:
    queue = await broker.declare_work_queue(unique_name)
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.body)
        if delivery.body == b"bad":
            raise PermanentError("cannot ever work")
        if delivery.body == b"flaky" and delivery.attempt == 1:
            raise TransientError("try again")
        if len(seen) >= 4:
            done.set()

    for body in (b"ok", b"bad", b"flaky"):
        await broker.publish(unique_name, body, message_id=body.decode())
    consumer = await broker.consume(queue, handler, prefetch=4, retry=RetryPolicy((0.1,)))
    await asyncio.wait_for(done.wait(), 20)
    await consumer.stop(grace=5)
    assert sorted(seen) == [b"bad", b"flaky", b"flaky", b"ok"]


async def test_unroutable_mandatory_publish_is_an_error(broker: AmqpBroker, unique_name: str) -> None:
    await broker.declare_exchange(unique_name)
    with pytest.raises(TransientError):
        await broker.publish(unique_name, b"lost?", message_id="m1")
    await broker.publish(unique_name, b"fine to drop", message_id="m2", mandatory=False)


async def test_queued_messages_wait_for_a_consumer(rabbitmq_url: str, unique_name: str) -> None:
    first = AmqpBroker(rabbitmq_url)
    await first.connect()
    queue = await first.declare_work_queue(unique_name)
    await first.publish(unique_name, b"while nobody listens", message_id="m")
    await first.close()
    second = AmqpBroker(rabbitmq_url)
    await second.connect()
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handler(delivery: Delivery) -> None:
        if not got.done():
            got.set_result(delivery.body)

    consumer = await second.consume(queue, handler, prefetch=1)
    assert await asyncio.wait_for(got, 10) == b"while nobody listens"
    await consumer.stop(grace=2)
    await second.close()


@pytest.fixture
async def couch(couchdb_server: Any, unique_name: str) -> AsyncIterator[CouchStore]:
    settings = CouchSettings(couchdb_url=couchdb_server.url, couchdb_user=couchdb_server.user,
                             couchdb_password=SecretStr(couchdb_server.password),
                             couchdb_db=unique_name)
    store = CouchStore(settings)
    await store.connect()
    yield store
    await store.close()


async def test_documents_are_stored_once_and_found(couch: CouchStore) -> None:
    assert await couch.put("doc-1", {"job_id": "j1", "kind": "a", "n": 1}) is True
    assert await couch.put("doc-1", {"job_id": "j1", "kind": "a", "n": 2}) is False
    await couch.put("doc-2", {"job_id": "j1", "kind": "b"})
    await couch.put("doc-3", {"job_id": "j2", "kind": "a"})
    stored = await couch.get("doc-1")
    assert stored is not None and stored["n"] == 1
    assert await couch.get("missing") is None
    found = await couch.find({"job_id": "j1"})
    assert sorted(d["_id"] for d in found) == ["doc-1", "doc-2"]
    await couch.check()



async def test_concurrent_puts_are_written_together_once_each(couch: CouchStore) -> None:
    await couch.put("old", {"job_id": "j3", "n": 0})
    ids = ["old", *(f"new-{i}" for i in range(40)), "new-0"]
    created = await asyncio.gather(*(couch.put(i, {"job_id": "j3", "n": 1}) for i in ids))
    assert created[0] is False and all(created[1:41])
    assert created[41] is False  # the same id twice in one write: stored once
    found = await couch.find({"job_id": "j3"})
    assert len(found) == 41
    stored = await couch.get("old")
    assert stored is not None and stored["n"] == 0



@pytest.mark.parametrize(("field", "index"), [("job_id", "by-job"),
                                              ("input.sha256", "by-input-sha"),
                                              ("output.sha256", "by-output-sha")])
async def test_couchdb_queries_use_their_indexes(couch: CouchStore, couchdb_server: Any,
                                                 unique_name: str, field: str, index: str) -> None:
    """A job's records and the lineage walk ask by one field each: CouchDB's ``_explain``
    names the Mango index made for it, not a scan of every document."""
    if couchdb_server.implementation == "pouchdb-server":
        pytest.skip("the stand-in's query planner is not CouchDB's")
    async with aiohttp.ClientSession(headers=couchdb_server.auth_headers()) as http, http.post(
        f"{couchdb_server.url}/{unique_name}/_explain", json={"selector": {field: "x"}}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["index"]["name"] == index


async def test_unreachable_couchdb_is_transient(unique_name: str) -> None:
    store = CouchStore(CouchSettings(couchdb_url="http://127.0.0.1:9", couchdb_db=unique_name))
    with pytest.raises(TransientError):
        await store.put("x", {"a": 1})
    await store.close()
