"""The whole pipeline storing provenance in a three-node CouchDB cluster while nodes die.

The provenance service (and the upload service's reads) talk to node 1 of a
three-node Apache CouchDB cluster (tests/couchdb_cluster.py: every database three
copies of one shard). Under a steady load of uploads, node 2 is killed with SIGKILL
and started again: provenance keeps storing records through node 1 meanwhile. Then
node 1 itself, the node ``COUCHDB_URL`` names, is killed and started again:
provenance holds its events until node 1 answers again. The batch must keep the fault
tests' invariant (tests/faults.py: nothing lost, nothing doubled), and afterwards every
node's own copy of the provenance database holds every record, at the same revision.
The report line (test-artifacts/fault-report.json) adds how long uploads and stored
records stalled.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from imgpipe.testing.processes import ServiceProcesses
from imgpipe.testing.servers.couchdb import RELEASE_SETTING
from tests.couchdb_cluster import ClusterNode, CouchDBCluster
from tests.faults import (
    Batch,
    SteadyUploads,
    assert_invariant,
    check_outputs,
    longest_gap,
    report,
    settle,
    verdict,
)
from tests.system import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(400)]

UPLOADS_PER_SECOND = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[CouchDBCluster]:
    release = os.environ.get(RELEASE_SETTING)
    if not release:
        pytest.skip(f"a CouchDB cluster needs an Apache CouchDB release ({RELEASE_SETTING})")
    started = CouchDBCluster(tmp_path / "couchdb-cluster", Path(release))
    try:
        yield started.start()
    finally:
        started.stop()


class StoredRecords:
    """How many provenance records the database holds, sampled every 0.25 s through a
    node that is never killed: when the count went up (``grew_at``)."""

    def __init__(self, node: ClusterNode, db: str) -> None:
        self.url = f"{node.url}/{db}"
        self.headers = node.auth_headers()
        self.count = 0
        self.grew_at: list[float] = []

    async def sample(self, http: aiohttp.ClientSession) -> None:
        try:
            async with http.get(self.url, headers=self.headers) as resp:
                count = int((await resp.json())["doc_count"]) if resp.status == 200 else 0
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return
        if count > self.count:
            self.count = count
            self.grew_at.append(time.time())

    async def run(self, running: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while running.is_set():
                await self.sample(http)
                await asyncio.sleep(0.25)


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http, \
                http.get(url) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def test_pipeline_survives_losing_couchdb_nodes(
    system_env: ServiceProcesses, cluster: CouchDBCluster
) -> None:
    system = system_env
    system.env.update(cluster.env())  # node 1, for provenance and the upload service's reads
    db = system.env["COUCHDB_DB"]
    node1, node2, node3 = cluster.nodes
    await system.start_all()

    batch = Batch(system)
    stored = StoredRecords(node3, db)
    uploads = SteadyUploads(batch, UPLOADS_PER_SECOND)
    started = time.time()
    uploads.start()
    sampling = asyncio.create_task(stored.run(uploads.running))
    await asyncio.sleep(3)

    # 1. node 2 dies; provenance writes through node 1 and goes on storing
    await asyncio.to_thread(cluster.kill, node2)
    node2_killed_at = time.time()
    count_at_kill = stored.count
    await asyncio.sleep(5)
    stored_while_node2_down = stored.count - count_at_kill
    node2_started_at = time.time()
    await asyncio.to_thread(cluster.start_node, node2)
    node2_back_at = time.time()
    await asyncio.sleep(3)

    # 2. node 1, the one provenance writes through, dies: provenance holds its events
    await asyncio.to_thread(cluster.kill, node1)
    node1_killed_at = time.time()
    await wait_for(lambda: _is(f"{system.url('provenance')}/readyz", 503), timeout=20)
    await asyncio.sleep(2)
    node1_started_at = time.time()
    await asyncio.to_thread(cluster.start_node, node1)
    node1_back_at = time.time()
    await system.wait_ready("provenance", timeout=60)
    await asyncio.sleep(3)
    await uploads.stop()
    await sampling
    ended = time.time()

    snap = await settle(system, list(batch.accepted), timeout=120)
    v = verdict(snap, batch.accepted)
    mismatched = await check_outputs(system, snap, batch.accepted)
    settled_at = time.time()

    # the cluster heals: each node's own copy holds every record, at the same revision
    records = {str(d["_id"]) for d in snap.docs}
    copies: dict[str, dict[str, str]] = {}

    async def healed() -> bool:
        for node in cluster.nodes:
            copies[node.nodename] = await asyncio.to_thread(node.local_docs, db)
        first = copies[node1.nodename]
        return records <= set(first) and all(c == first for c in copies.values())

    deadline = time.monotonic() + 60
    while not (equal := await healed()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    healed_at = time.time()

    line = report(
        "couchdb_cluster", "a CouchDB node SIGKILLed and restarted, then the node provenance "
        "writes through, under steady uploads", 2, batch, v,
        nodes=3, n=3, q=1,
        killed=[node2.nodename, f"{node1.nodename} (COUCHDB_URL)"],
        records=len(records),
        stored_while_other_node_down=stored_while_node2_down,
        down_s={"other_node": round(node2_back_at - node2_killed_at, 1),
                "provenance_node": round(node1_back_at - node1_killed_at, 1)},
        rejoin_s={"other_node": round(node2_back_at - node2_started_at, 1),
                  "provenance_node": round(node1_back_at - node1_started_at, 1)},
        load_s=round(ended - started, 1),
        stall_uploads_s=round(longest_gap(uploads.accepted_at, started, ended), 1),
        stall_records_s={
            "other_node_down": round(longest_gap(
                stored.grew_at, node2_killed_at, node2_back_at + 3), 1),
            "provenance_node_down": round(longest_gap(
                stored.grew_at, node1_killed_at, ended), 1)},
        copies_equal_after_s=round(healed_at - settled_at, 1) if equal else None,
        stalls_at={"other_node_kill": round(node2_killed_at - started, 1),
                   "provenance_node_kill": round(node1_killed_at - started, 1)},
    )
    assert_invariant(v)
    assert not mismatched, mismatched
    assert line["done"] == len(batch.accepted) > 20
    assert stored_while_node2_down > 0  # two copies of three still take writes
    assert equal, "the copies still differ 60 s after the batch settled: " + ", ".join(
        f"{name} holds {len(c)} documents, {len(records - set(c))} records missing"
        for name, c in copies.items())


async def _is(url: str, status: int) -> bool:
    return await _status(url) == status
