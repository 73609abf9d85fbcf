"""The whole pipeline on a three-node RabbitMQ cluster while nodes die.

The services spread over the nodes (each lists every node in ``AMQP_URL``, its
home node first): upload on node 1, a runner on node 2, a second runner and
provenance on node 3. Under a steady load of uploads, the node that leads the
stage's quorum queue is killed with SIGKILL and later started again; then the
node leading it by then is stopped gracefully. The batch must keep the fault
tests' invariant (tests/faults.py: nothing lost, nothing doubled); the report
line (test-artifacts/fault-report.json) adds how long the pipeline stalled, how
many idle subscriptions were renewed, and how many deliveries came back by it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    # Idle consumers subscribe again after 10 s instead of the default 30 s, so that a
    # delivery the cluster counted but never sent comes back within the settle window.
    system.env["AMQP_IDLE_RENEW"] = "10"
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
    extra["consumers_renewed"], extra["deliveries_recovered"] = await renewals(system, homes)
    line = report("rabbitmq_cluster", "leader node SIGKILLed and restarted, then the new "
                  "leader stopped gracefully, under steady uploads", 2, batch, v, **extra)
    if v.lost:
        print(json.dumps(line | {"started": datetime.fromtimestamp(started).isoformat()}))
        await report_loss(system, cluster, homes, v.lost)
    assert_invariant(v)
    assert not mismatched, mismatched
    assert line["done"] == len(batch.accepted) > 20


async def report_loss(system: ServiceProcesses, cluster: RabbitMQCluster, homes: dict[str, int],
                      lost: list[str]) -> None:
    """Where the lost jobs' messages are, for whoever reads the failure: the queues, who
    the cluster says holds them, and what each service logged of them and of its broker."""
    print(json.dumps(await asyncio.to_thread(cluster.queues), indent=1))
    print(json.dumps(await asyncio.to_thread(cluster.consumers), indent=1))
    print(json.dumps(cluster.log_lines("[error]", "[warning]", "leader", "uploaded"), indent=1))
    ids = [job.split(":")[0] for job in lost]
    metrics = await scrape(system, homes)
    for key in homes:
        lines = [line for line in system.log(key).splitlines()
                 if any(i in line for i in ids) or '"level": "warning"' in line
                 or '"level": "error"' in line or "subscribed again" in line]
        print(key, *lines[-40:], sep="\n  ")
        print(*[m for m in metrics.get(key, "no metrics").splitlines()
                if m.startswith(("imgpipe_consumer_", "imgpipe_messages_", "no metrics"))],
              sep="\n  ")


async def scrape(system: ServiceProcesses, keys: Iterable[str]) -> dict[str, str]:
    """The /metrics text of each of the services ``keys`` that answers."""
    texts: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for key in keys:
            try:
                async with session.get(system.url(key) + "/metrics") as resp:
                    texts[key] = await resp.text()
            except aiohttp.ClientError:
                continue
    return texts


async def renewals(system: ServiceProcesses, keys: Iterable[str]) -> tuple[int, int]:
    """Idle subscriptions renewed, and deliveries that came back by it, over the services."""
    totals = {"imgpipe_consumer_renewals": 0.0, "imgpipe_consumer_recovered": 0.0}
    for text in (await scrape(system, keys)).values():
        for family in text_string_to_metric_families(text):
            if family.name in totals:
                totals[family.name] += sum(s.value for s in family.samples
                                           if s.name.endswith("_total"))
    return int(totals["imgpipe_consumer_renewals"]), int(totals["imgpipe_consumer_recovered"])
