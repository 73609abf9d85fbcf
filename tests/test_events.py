"""Server-sent events against the running services (four processes on the test servers)
and ``imgpipe dev`` on embedded backends: per job, for everything, resumed after a cut,
and ``imgpipe submit --wait`` following them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from imgpipe.client.api import Client
from imgpipe.client.sse import Event, follow, parse
from imgpipe.testing.names import run_name
from imgpipe.testing.processes import DevProcess
from tests.backend_sets import backend_env_for
from tests.images import image_bytes

PIPELINE = "resize:w=32/format:png"


class Live:
    """The upload URL of a running system, and a way to restart its upload service."""

    def __init__(self, url: str, restart: Any) -> None:
        self.url = url
        self.restart = restart


@pytest.fixture(scope="module", params=["services", "dev"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The four services on RabbitMQ/SeaweedFS/CouchDB, or ``imgpipe dev`` on its embedded
    broker, directory store and SQLite."""
    if request.param == "services":
        system = request.getfixturevalue("module_system")

        async def restart_upload() -> None:
            system.stop("upload-server")
            system.start("upload-server")
            await system.wait_ready("upload-server")

        with system:
            system.start_all_sync()
            yield Live(system.upload_url, restart_upload)
        return
    name = run_name("m")
    base = tmp_path_factory.mktemp(name)
    env = backend_env_for("embedded", request, base / "data", name)

    with DevProcess(env, base / "data", base / "logs", embedded=True) as dev:
        async def restart_dev() -> None:
            dev.stop()
            dev.start()
            await dev.wait_ready()

        dev.start()
        dev.wait_ready_sync()
        yield Live(dev.upload_url, restart_dev)


async def _upload(url: str, width: int = 40) -> str:
    async with Client(url) as client:
        job = await client.upload(image_bytes(width, 30, ".png"), filename="e.png",
                                  pipeline=PIPELINE)
    return str(job["job_id"])


def _all_of(job_id: str, *kinds: str) -> Any:
    """A predicate true once ``job_id``'s records of every kind in ``kinds`` were seen
    (records of one job may be stored in any order: the runner can start before the
    upload's own record lands)."""
    wanted = set(kinds)

    def seen(event: Event) -> bool:
        if event.json()["job_id"] == job_id:
            wanted.discard(event.json()["kind"])
        return not wanted

    return seen


async def _until(events: Any, predicate: Any, timeout: float = 60) -> list[Event]:
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError(f"stream ended first: {seen}")


async def test_a_jobs_events_end_in_its_final_status(live: Live) -> None:
    job_id = await _upload(live.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{live.url}/jobs/{job_id}/events") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = (e async for e, _ in parse(resp.content) if e is not None)
            seen = await _until(events, lambda e: e.json()["status"] == "done")
        assert {e.event for e in seen} == {"job"} and all(e.id for e in seen)
        assert seen[-1].json()["outputs"][0]["pipeline"] == PIPELINE
        async with session.get(f"{live.url}/jobs/{'0' * 32}/events") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["reason"] == "job_not_found"


async def test_events_resume_after_a_cut_with_last_event_id(live: Live) -> None:
    async with aiohttp.ClientSession() as session:
        stream = follow(session, f"{live.url}/events")
        first_job = asyncio.ensure_future(_upload(live.url, 41))
        before = await _until(stream, lambda e: e.json().get("kind") == "step.completed")
        await stream.aclose()
        job_a = await first_job
        assert all(e.event == "record" for e in before)
        assert job_a in {e.json()["job_id"] for e in before}
        last_id = next(e.id for e in reversed(before) if e.id)

        job_b = await _upload(live.url, 42)  # made while no one listens
        async with session.get(f"{live.url}/events", headers={"Last-Event-ID": last_id}) as resp:
            events = (e async for e, _ in parse(resp.content) if e is not None)
            after = await _until(events, _all_of(job_b, "job.received", "step.completed"))
        assert job_a not in {e.json()["job_id"] for e in after if e.json()["kind"] ==
                             "job.received"}  # nothing before the id comes again


async def test_the_client_waits_by_events_and_reconnects(live: Live) -> None:
    async with Client(live.url) as client:
        job_ids = [await _upload(live.url, 43 + n) for n in range(3)]
        views = await client.wait(job_ids, timeout=90)
        assert client.waited_by == "events"
        assert {v["status"] for v in views.values()} == {"done"}


async def test_a_stream_survives_a_restart_of_the_service(live: Live) -> None:
    """The server goes away mid-stream; follow() reconnects with Last-Event-ID and the
    records made meanwhile arrive, none lost."""
    async with aiohttp.ClientSession() as session:
        stream = follow(session, f"{live.url}/events", reconnects=60, delay=0.25)
        following = asyncio.ensure_future(anext(stream))
        job_a = await _upload(live.url, 51)
        seen = [await following]
        done_a = _all_of(job_a, "job.received", "step.completed")
        if not done_a(seen[0]):
            seen += await _until(stream, done_a)
        await live.restart()
        job_b = await _upload(live.url, 52)
        seen += await _until(stream, _all_of(job_b, "job.received", "step.started",
                                             "step.completed"), timeout=90)
        await stream.aclose()
    assert {e.json()["kind"] for e in seen if e.json()["job_id"] == job_a} >= {
        "job.received", "step.completed"}
