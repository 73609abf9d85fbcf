"""The whole pipeline on a three-node RabbitMQ cluster while nodes die.

The services spread over the nodes (each lists every node in ``AMQP_URL``, its
home node first): upload on node 1, a runner on node 2, a second runner and
provenance on node 3. Under a steady load of uploads, the node that leads the
stage's quorum queue is killed with SIGKILL and later started again; then the
node leading it by then is stopped gracefully. The batch must keep the fault
tests' invariant (tests/faults.py: nothing lost, nothing doubled); the report
line (test-artifacts/fault-report.json) adds how long the pipeline stalled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from imgpipe.broker.topology import work_queue_name
from imgpipe.testing.processes import ServiceProcesses
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
from tests.rabbitmq_cluster import RabbitMQCluster

pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(600)]

UPLOADS_PER_SECOND = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RabbitMQCluster]:
    started = RabbitMQCluster(tmp_path / "cluster")
    try:
        yield started.start()
    finally:
        started.stop()


async def test_pipeline_survives_losing_rabbitmq_nodes(
    system_env: ServiceProcesses, cluster: RabbitMQCluster
) -> None:
    system = system_env
    system.env["AMQP_URL"] = cluster.url
    system.env["AMQP_RETRY_DELAYS"] = "0.5,1,2"
    homes = {"upload-server": 0, "runner": 1, "runner2": 2, "provenance": 2}
    system.start("imageproc")
    for key, home in homes.items():
        system.start("runner" if key == "runner2" else key, key=key,
                     AMQP_URL=cluster.url_from(home))
    await asyncio.gather(*(system.wait_ready(k) for k in ["imageproc", *homes]))

    batch = Batch(system)
    uploads = SteadyUploads(batch, UPLOADS_PER_SECOND)
    started = time.time()
    uploads.start()
    queue = work_queue_name(system.env["AMQP_EXCHANGE_SUBSCRIBE"])
    await asyncio.sleep(3)
    killed = await asyncio.to_thread(cluster.leader, queue)
    await asyncio.to_thread(cluster.kill, killed)
    killed_at = time.time()
    await asyncio.sleep(5)
    await asyncio.to_thread(cluster.start_node, killed)
    await asyncio.to_thread(cluster.wait_running, 3)
    restarted_at = time.time()
    await asyncio.sleep(3)
    stopped = await asyncio.to_thread(cluster.leader, queue)
    await asyncio.to_thread(cluster.stop_node, stopped)
    stopped_at = time.time()
    await asyncio.sleep(4)
    await uploads.stop()
    ended = time.time()

    snap = await settle(system, list(batch.accepted), timeout=180)
    v = verdict(snap, batch.accepted)
    mismatched = await check_outputs(system, snap, batch.accepted)
    completed = [datetime.fromisoformat(str(d["time"]).replace("Z", "+00:00")).timestamp()
                 for d in snap.docs if d.get("kind") == "step.completed"]
    extra: dict[str, Any] = {
        "nodes": 3, "killed": killed.nodename, "stopped_gracefully": stopped.nodename,
        "restart_s": round(restarted_at - killed_at, 1),
        "load_s": round(ended - started, 1),
        "stall_uploads_s": round(longest_gap(uploads.accepted_at, started, ended), 1),
        "stall_processing_s": round(longest_gap(completed, started + 2, ended), 1),
        "stalls_at": {"kill": round(killed_at - started, 1),
                      "graceful_stop": round(stopped_at - started, 1)},
    }
    line = report("rabbitmq_cluster", "leader node SIGKILLed and restarted, then the new "
                  "leader stopped gracefully, under steady uploads", 2, batch, v, **extra)
    if v.lost:
        # Where the lost jobs' messages are, for whoever reads the failure.
        print(json.dumps(await asyncio.to_thread(cluster.queues), indent=1))
        for key in homes:
            lines = [line for line in system.log(key).splitlines()
                     if any(lost.split(":")[0] in line for lost in v.lost)]
            print(key, *lines[-20:], sep="\n  ")
    assert_invariant(v)
    assert not mismatched, mismatched
    assert line["done"] == len(batch.accepted) > 20
