"""The upload service's guards: bad input, limits while streaming, slow clients, API
tokens, readiness while a backend is down, and secrets that never show."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import unicodedata
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgpipe.domain.keys import object_key, safe_extension
from imgpipe.errors import InvalidInput, TransientError
from imgpipe.testing.processes import ServiceProcesses, wait_answering
from imgpipe.testing.servers.base import free_port
from imgpipe.upload.intake import clean_filename, input_key
from tests.faults import Batch, settle, snapshot, stores
from tests.images import image_bytes

MAX_BYTES = 300_000
BOUNDARY = "imgpipe-test-boundary"


@pytest.fixture(scope="module")
def module_system(module_system: ServiceProcesses) -> ServiceProcesses:
    """This module's services have small limits (``upload_only``: nothing is processed)."""
    module_system.env |= {"UPLOAD_MAX_BYTES": str(MAX_BYTES), "UPLOAD_READ_TIMEOUT": "1",
                          "UPLOAD_MAX_FILES": "3"}
    return module_system


def part(name: str, data: bytes, filename: str | None = None,
         content_type: str = "application/octet-stream") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode("utf-8", "surrogateescape") + data + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def post(system: ServiceProcesses, body: bytes, *, content_type: str | None = None,
               query: str = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    ctype = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    async with aiohttp.ClientSession() as http, http.post(
        f"{system.upload_url}/upload{query}", data=body,
        headers={"Content-Type": ctype} | (headers or {}),
    ) as resp:
        return resp.status, await resp.json(content_type=None)


PNG = image_bytes(64, 48, ".png")

CASES = [
    ("missing file part", multipart(part("pipeline", b"resize:w=10", content_type="text/plain")),
     None, "", 400, "missing_file"),
    ("empty file", multipart(part("file", b"", "empty.png")), None, "", 400, "empty_file"),
    ("not an image", multipart(part("file", b"hello, world " * 10, "notes.png")), None, "",
     415, "unsupported_format"),
    ("wrong content type", PNG, "image/png", "", 415, "expected_multipart"),
    ("form without files", b"pipeline=resize%3Aw%3D10", "application/x-www-form-urlencoded", "",
     400, "missing_file"),
    ("unknown field", multipart(part("file", PNG, "a.png"), part("colour", b"blue")), None, "",
     400, "unknown_field"),
    ("oversize file", multipart(part("file", PNG + b"\0" * MAX_BYTES, "big.png")), None, "",
     413, "too_large"),
    ("too many files", multipart(*(part("file", PNG, f"{n}.png") for n in range(4))), None, "",
     413, "too_many_files"),
    ("invalid pipeline text", multipart(part("file", PNG, "a.png"),
                                        part("pipeline", b"resize:w=abc")), None, "",
     400, "invalid_pipeline"),
    ("invalid pipeline in query", multipart(part("file", PNG, "a.png")), None,
     "?pipeline=frobnicate:x%3D1", 400, "invalid_pipeline"),
    ("unknown preset", multipart(part("file", PNG, "a.png"), part("pipeline", b"nopreset")),
     None, "", 400, "unknown_preset"),
    ("path traversal filename", multipart(part("file", PNG, "../../etc/passwd.png")), None, "",
     400, "invalid_filename"),
    ("control characters in filename", multipart(part("file", PNG, "a\x07b\x1b[31m.png")), None,
     "", 400, None),
    ("direction override in filename", multipart(part("file", PNG, "photo\u202egnp.exe")), None,
     "", 400, "invalid_filename"),
    ("overlong filename", multipart(part("file", PNG, "x" * 300 + ".png")), None, "",
     400, "invalid_filename"),
    ("malformed multipart", b"--nope\r\ngarbage", None, "", 400, "invalid_form"),
]


@pytest.mark.parametrize(("case", "body", "ctype", "query", "status", "reason"), CASES,
                         ids=[c[0] for c in CASES])
async def test_bad_input_gets_a_specific_4xx_and_stores_nothing(
    upload_only: ServiceProcesses, case: str, body: bytes, ctype: str | None, query: str,
    status: int, reason: str | None,
) -> None:
    got, reply = await post(upload_only, body, content_type=ctype, query=query)
    assert got == status, (case, reply)
    assert set(reply["error"]) >= {"reason", "message"}, reply
    if reason is not None:
        assert reply["error"]["reason"] == reason, reply
    assert len(reply["error"]["message"]) > 10, reply
    async with aiohttp.ClientSession() as http, \
            http.get(f"{upload_only.upload_url}/healthz") as resp:
        assert resp.status == 200
    snap = await snapshot(upload_only)
    assert snap.inputs == [], (case, snap.inputs)


async def test_other_routes_answer_json(upload_only: ServiceProcesses) -> None:
    async with aiohttp.ClientSession() as http:
        for method, path, status in (("GET", "/upload", 405), ("GET", "/nope", 404),
                                     ("GET", f"/jobs/{'a' * 32}", 404), ("GET", "/jobs/..%2F..", 404)):
            async with http.request(method, f"{upload_only.upload_url}{path}") as resp:
                assert resp.status == status, path
                assert (await resp.json())["error"]["reason"]


async def _raw_upload(port: int, body_size: int, *, stall_after: int | None = None,
                      close_after: int | None = None) -> tuple[bytes, int]:
    """Send a multipart upload by hand; return the reply's first bytes and bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = part("file", b"", "slow.png")[:-2]
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + body_size + len(tail)
    writer.write((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
                 + head + PNG[:1000])
    sent = 1000
    reply = asyncio.create_task(reader.read(4096))
    try:
        while sent < body_size and not reply.done():
            if stall_after is not None and sent >= stall_after:
                break
            if close_after is not None and sent >= close_after:
                writer.close()
                return b"", sent
            writer.write(b"\0" * 65536)
            sent += 65536
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except (TimeoutError, ConnectionError):
                break
        return await asyncio.wait_for(reply, 30), sent
    finally:
        reply.cancel()
        writer.close()


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1") else 0


async def test_limits_apply_while_streaming(upload_only: ServiceProcesses) -> None:
    port = upload_only.ports["upload-server"]
    raw, sent = await _raw_upload(port, 50 * 1024 * 1024)
    assert _status(raw) == 413 and b"too_large" in raw, raw[:300]
    assert sent < 50 * 1024 * 1024  # refused as the limit was crossed, not at the end

    raw, _ = await _raw_upload(port, 200_000, stall_after=100_000)  # then sends nothing
    assert _status(raw) == 408 and b"upload_timeout" in raw, raw[:300]

    await _raw_upload(port, 200_000, close_after=100_000)  # the client goes away
    await asyncio.sleep(1)
    assert (await snapshot(upload_only)).inputs == []
    async with aiohttp.ClientSession() as http, \
            http.get(f"{upload_only.upload_url}/healthz") as resp:
        assert resp.status == 200


TOKENS = "tok-alpha-0123456789,tok-beta-9876543210"


async def test_api_tokens(system_env: ServiceProcesses) -> None:
    system = system_env
    system.start("upload-server", UPLOAD_API_TOKENS=TOKENS)
    await system.wait_ready("upload-server")
    body = multipart(part("file", PNG, "a.png"))
    status, reply = await post(system, body)
    assert (status, reply["error"]["reason"]) == (401, "missing_token")
    status, reply = await post(system, body, headers={"Authorization": "Bearer tok-gamma"})
    assert (status, reply["error"]["reason"]) == (401, "invalid_token")
    status, reply = await post(system, body, headers={"Authorization": "Basic dG9rLWFscGhh"})
    assert status == 401
    assert (await snapshot(system)).inputs == []  # nothing stored without a token
    status, reply = await post(system, body,
                               headers={"Authorization": "Bearer tok-beta-9876543210"})
    assert status == 202, reply
    job = reply["jobs"][0]["job_id"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.upload_url}/jobs/{job}") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(f"{system.upload_url}/jobs/{job}",
                            headers={"Authorization": "Bearer tok-alpha-0123456789"}) as resp:
            assert resp.status == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(f"{system.upload_url}{path}") as resp:
                assert resp.status == 200, path
    assert "tok-alpha-0123456789" not in system.log("upload-server")


async def test_a_service_whose_backends_are_down_stays_up_not_ready(system_env: ServiceProcesses) -> None:
    """Started with RabbitMQ and CouchDB unreachable: alive, not ready, 503 + Retry-After,
    nothing stored; SIGTERM while it waits stops it at once with status 0."""
    system = system_env
    dead = free_port()
    system.env |= {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{dead}/",
                   "COUCHDB_URL": f"http://127.0.0.1:{dead}"}
    for key in ("upload-server", "provenance", "runner"):
        system.start(key)
    async with aiohttp.ClientSession() as http:
        for key in ("upload-server", "provenance", "runner"):
            await wait_answering(f"{system.url(key)}/healthz", proc=system.procs[key], timeout=30)
            async with http.get(f"{system.url(key)}/readyz") as resp:
                assert resp.status == 503, key
                checks = (await resp.json())["checks"]
                assert any(v != "ok" for v in checks.values()), checks
        async with http.get(f"{system.upload_url}/readyz") as resp:
            assert "rabbitmq" in (await resp.json())["checks"]
    status, reply = await post(system, multipart(part("file", PNG, "a.png")))
    assert status == 503 and reply["error"]["reason"] == "broker_unavailable"
    s3, _ = stores(system)
    await s3.connect()
    try:
        with contextlib.suppress(TransientError):  # no bucket yet: nothing stored either
            assert await s3.list_keys(system.env["S3_INPUT_BUCKET"]) == []
    finally:
        await s3.close()
    for key in ("upload-server", "provenance", "runner"):
        assert system.procs[key].poll() is None, system.log(key)
        assert system.stop(key, signal.SIGTERM, timeout=10) == 0, system.log(key)[-2000:]


SECRETS = ("imgpipe-secret", "tok-alpha-0123456789", "wrong-s3-secret-Zq81",
           "wrong-couch-pw-Zq82", "wrong-amqp-pw-Zq83")


async def test_secrets_never_show(system: ServiceProcesses) -> None:
    """Credentials appear in no log line, error reply, readiness answer or record."""
    seen: list[str] = []
    batch = Batch(system)
    job = await batch.upload(image_bytes(80, 60, ".png"))
    assert job is not None
    await batch.upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 300, expect="failed")
    await settle(system, list(batch.accepted))
    system.start("upload-server", key="upload-bad",
                 S3_SECRET_KEY="wrong-s3-secret-Zq81", COUCHDB_PASSWORD="wrong-couch-pw-Zq82",
                 AMQP_URL=system.env["AMQP_URL"].replace(":guest@", ":wrong-amqp-pw-Zq83@"),
                 UPLOAD_API_TOKENS="tok-alpha-0123456789")
    bad = system.url("upload-bad")
    await wait_answering(f"{bad}/healthz", proc=system.procs["upload-bad"])
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(2)  # let it try (and log) a few times
        async with http.get(f"{bad}/readyz") as resp:
            seen.append(await resp.text())
            assert resp.status == 503
        for headers in ({}, {"Authorization": "Bearer wrong-s3-secret-Zq81"},
                        {"Authorization": "Bearer tok-alpha-0123456789"}):
            form = aiohttp.FormData()
            form.add_field("file", PNG, filename="a.png")
            async with http.post(f"{bad}/upload", data=form, headers=headers) as resp:
                seen.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
        for key in ("upload-server", "runner", "provenance", "imageproc"):
            for path in ("/readyz", "/metrics"):
                async with http.get(f"{system.url(key)}{path}") as resp:
                    seen.append(await resp.text())
    seen.append(json.dumps((await snapshot(system)).docs))
    system.stop("upload-bad")
    seen += [system.log(key) for key in ("upload-server", "runner", "provenance", "imageproc",
                                         "upload-bad")]
    everything = "\n".join(seen)
    for secret in SECRETS:
        hits = [line[:300] for line in everything.splitlines() if secret in line]
        assert not hits, (secret, hits)


async def test_metrics_and_job_logs(system: ServiceProcesses) -> None:
    """Requests, jobs, deliveries, handling time and queue depth on /metrics; log lines
    carry the job id."""
    batch = Batch(system)
    job = await batch.upload(image_bytes(80, 60, ".png"))
    await batch.upload(b"GIF89a" + b"\0" * 200, expect="failed")
    await settle(system, list(batch.accepted))
    async with aiohttp.ClientSession() as http:
        texts = {}
        for key in ("upload-server", "runner", "provenance"):
            async with http.get(f"{system.url(key)}/metrics") as resp:
                texts[key] = await resp.text()
    upload, runner, provenance = texts["upload-server"], texts["runner"], texts["provenance"]
    assert 'imgpipe_http_requests_total{method="POST",route="/upload",status="202"} 2.0' in upload
    assert "imgpipe_http_request_seconds_bucket" in upload
    queue = f"imgpipe.{system.env['AMQP_EXCHANGE_SUBSCRIBE']}"
    assert f'imgpipe_messages_total{{outcome="acked",queue="{queue}"}} 1.0' in runner
    assert f'imgpipe_messages_total{{outcome="dead_lettered",queue="{queue}"}} 1.0' in runner
    assert f'imgpipe_queue_messages{{queue="{queue}.dlq"}} 1.0' in runner
    assert 'imgpipe_runner_jobs_total{outcome="done"} 1.0' in runner
    assert 'imgpipe_runner_jobs_total{outcome="failed"} 1.0' in runner
    assert "imgpipe_runner_processing_seconds_count 1.0" in runner
    assert "imgpipe_message_handling_seconds_count" in provenance
    lines = [json.loads(line) for line in system.log("runner").splitlines() if line.startswith("{")]
    assert any(line.get("job_id") == job and line["message"] == "image processed" for line in lines)
    assert all("job_id" in line for line in lines if line["message"].startswith("image "))


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_keys_never_come_from_client_input(name: str) -> None:
    try:
        kept = clean_filename(name)
    except InvalidInput as err:
        assert err.reason == "invalid_filename"
    else:
        assert kept is None or ("/" not in kept and "\\" not in kept and len(kept) <= 255)
        assert kept is None or all(unicodedata.category(c) not in ("Cc", "Cf") for c in kept)
    with pytest.raises(ValueError):
        object_key("uploads", name + "/..")
    assert input_key("0" * 32) == "uploads/" + "0" * 32
    assert safe_extension(name) in (name.lower().lstrip("."), "bin")
    for bad in ("..", ".", "", "a/b", "a\x00", "x" * 200):
        with pytest.raises(ValueError):
            object_key("jobs", bad)


async def test_sigterm_lets_an_upload_in_flight_finish(system_env: ServiceProcesses) -> None:
    """SIGTERM while an upload streams: no new connections, the upload still gets its 202,
    then the service exits 0."""
    system = system_env
    system.start("upload-server")
    await system.wait_ready("upload-server")
    body = multipart(part("file", image_bytes(300, 200, ".png"), "late.png"))
    reader, writer = await asyncio.open_connection("127.0.0.1", system.ports["upload-server"])
    writer.write((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                  "Connection: close\r\n\r\n").encode() + body[:2000])
    await writer.drain()
    await asyncio.sleep(0.3)
    proc = system.procs["upload-server"]
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert await _refused(system.ports["upload-server"])  # intake stopped
    writer.write(body[2000:])
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert _status(reply) == 202, reply[:500]
    assert await asyncio.to_thread(proc.wait, 20) == 0
    job = json.loads(reply.split(b"\r\n\r\n", 1)[1])["jobs"][0]["job_id"]
    assert f"uploads/{job}" in (await snapshot(system)).inputs


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False
