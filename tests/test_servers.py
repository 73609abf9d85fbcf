"""The server fixtures give working servers: S3, CouchDB API and RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError


@asynccontextmanager
async def s3_client(server: Any, *, secret_key: str | None = None) -> AsyncIterator[Any]:
    session = AioSession()
    async with session.create_client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret_key or server.secret_key,
        region_name=server.region,
        config=AioConfig(s3={"addressing_style": "path"}),
    ) as client:
        yield client


async def test_s3_put_and_get(s3_server: Any, unique_name: str) -> None:
    async with s3_client(s3_server) as s3:
        await s3.create_bucket(Bucket=unique_name)
        await s3.put_object(Bucket=unique_name, Key="a/b.txt", Body=b"hello")
        reply = await s3.get_object(Bucket=unique_name, Key="a/b.txt")
        async with reply["Body"] as body:
            assert await body.read() == b"hello"
        listed = await s3.list_objects_v2(Bucket=unique_name)
        assert [item["Key"] for item in listed["Contents"]] == ["a/b.txt"]


async def test_s3_refuses_wrong_keys(s3_server: Any, unique_name: str) -> None:
    async with s3_client(s3_server, secret_key="not-the-secret") as s3:
        with pytest.raises(ClientError) as caught:
            await s3.create_bucket(Bucket=unique_name)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_s3_keeps_data_across_restart(s3_server: Any, unique_name: str) -> None:
    async with s3_client(s3_server) as s3:
        await s3.create_bucket(Bucket=unique_name)
        await s3.put_object(Bucket=unique_name, Key="kept", Body=b"still here")
    url, old_pid = s3_server.url, s3_server.pid
    s3_server.stop()
    assert not s3_server.running
    s3_server.start()
    assert s3_server.url == url and s3_server.pid != old_pid
    async with s3_client(s3_server) as s3:
        reply = await s3.get_object(Bucket=unique_name, Key="kept")
        async with reply["Body"] as body:
            assert await body.read() == b"still here"


async def test_couchdb_admin_creates_database(couchdb_server: Any, unique_name: str) -> None:
    headers = couchdb_server.auth_headers()
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.put(f"{couchdb_server.url}/{unique_name}") as reply:
            assert reply.status == 201
            assert await reply.json() == {"ok": True}
        doc = {"_id": "one", "value": 1}
        async with http.put(
            f"{couchdb_server.url}/{unique_name}/one", data=json.dumps(doc)
        ) as reply:
            assert reply.status == 201
        async with http.get(f"{couchdb_server.url}/{unique_name}/one") as reply:
            assert (await reply.json())["value"] == 1
        async with http.delete(f"{couchdb_server.url}/{unique_name}") as reply:
            assert reply.status == 200


async def test_couchdb_refuses_wrong_password(couchdb_server: Any) -> None:
    headers = {**couchdb_server.auth_headers(), "Authorization": "Basic YWRtaW46d3Jvbmc="}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{couchdb_server.url}/_session") as reply,
    ):
        assert reply.status == 401


async def test_couchdb_keeps_data_across_restart(couchdb_server: Any, unique_name: str) -> None:
    async with aiohttp.ClientSession(headers=couchdb_server.auth_headers()) as http:
        async with http.put(f"{couchdb_server.url}/{unique_name}") as reply:
            assert reply.status == 201
        async with http.put(f"{couchdb_server.url}/{unique_name}/kept", data="{}") as reply:
            assert reply.status == 201
    couchdb_server.stop()
    assert not couchdb_server.running
    couchdb_server.start()
    async with aiohttp.ClientSession(headers=couchdb_server.auth_headers()) as http:
        async with http.get(f"{couchdb_server.url}/{unique_name}/kept") as reply:
            assert reply.status == 200
        async with http.delete(f"{couchdb_server.url}/{unique_name}") as reply:
            assert reply.status == 200


async def test_rabbitmq_accepts_connection(rabbitmq_url: str, unique_name: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name, auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=unique_name)
        message = await queue.get(timeout=5)
        assert message is not None
        await message.ack()
        assert message.body == b"ping"
        await queue.delete()


@pytest.mark.slow
@pytest.mark.fault
async def test_private_rabbitmq_keeps_durable_messages_across_restart(
    private_rabbitmq_server: Any, unique_name: str
) -> None:
    connection = await aio_pika.connect(private_rabbitmq_server.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(unique_name, durable=True)
        message = aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=unique_name)
    private_rabbitmq_server.stop()
    assert not private_rabbitmq_server.running
    private_rabbitmq_server.start()
    connection = await aio_pika.connect(private_rabbitmq_server.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name, durable=True)
        received = await queue.get(timeout=5)
        assert received is not None
        await received.ack()
        assert received.body == b"kept"
        await queue.delete()


SERVERS_COMMAND = [sys.executable, "-m", "imgpipe.testing.servers"]


def test_servers_command_starts_reports_and_stops(tmp_path: Any) -> None:
    def run(*args: str) -> str:
        command = [*SERVERS_COMMAND, *args, "--state-dir", str(tmp_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        run("start", "--ports", "auto")
        assert "already running" in run("start", "--ports", "auto")
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in run("env").splitlines()
        )
        assert set(exports) >= {"AMQP_URL", "S3_URL", "S3_ACCESS_KEY", "COUCHDB_URL"}
        status = run("status")
        assert "s3: running" in status and "couchdb: running" in status
    finally:
        run("stop")
    done = subprocess.run(
        [*SERVERS_COMMAND, "status", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "s3: stopped" in done.stdout and "couchdb: stopped" in done.stdout
