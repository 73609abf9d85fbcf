"""A three-node RabbitMQ cluster on loopback, for the cluster fault test.

Each node is a private broker of the harness (:class:`~imgpipe.testing.servers.rabbitmq.RabbitMQServer`:
its own node name, AMQP port, ``RABBITMQ_DIST_PORT``, mnesia and log
directories) started with the cluster's Erlang cookie (``HOME`` holds it);
nodes 2 and 3 join node 1 with ``rabbitmqctl join_cluster``. A node killed or
stopped comes back with :meth:`RabbitMQCluster.start_node` and rejoins on its
own (its mnesia directory remembers the cluster). Start-up takes about 15 s.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from imgpipe.testing.servers.base import ServiceError, free_ports
from imgpipe.testing.servers.rabbitmq import LIB_BIN, RabbitMQServer

CTL = LIB_BIN / "rabbitmqctl"


class ClusterNode(RabbitMQServer):
    """A private broker that carries the cluster's cookie."""

    def __init__(self, state_dir: Path, port: int, dist_port: int, cookie_home: Path) -> None:
        super().__init__(state_dir, port, started=False, dist_port=dist_port)
        self.cookie_home = cookie_home

    def _environ(self) -> dict[str, str]:
        environ: dict[str, str] = super()._environ()
        return environ | {"HOME": str(self.cookie_home)}


class RabbitMQCluster:
    """Three (``size``) clustered nodes; ``url`` lists them all, as ``AMQP_URL`` may."""

    def __init__(self, state_dir: Path, size: int = 3) -> None:
        self.state_dir = Path(state_dir)
        self.cookie_home = self.state_dir / "cookie"
        ports = free_ports(2 * size)
        self.nodes = [ClusterNode(self.state_dir / f"rc{n + 1}", ports[2 * n], ports[2 * n + 1],
                                  self.cookie_home) for n in range(size)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def url_from(self, first: int) -> str:
        """``AMQP_URL`` naming every node, node ``first`` first (a client's home node)."""
        order = self.nodes[first:] + self.nodes[:first]
        return ",".join(node.url for node in order)

    def ctl(self, node: ClusterNode, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n NODE ARGS`` with the cluster's cookie; its output."""
        cookie = (self.cookie_home / ".erlang.cookie").read_text()
        done = subprocess.run(
            [str(CTL), "--erlang-cookie", cookie, "-n", node.nodename, *args],
            env=os.environ | {"HOME": str(self.cookie_home)}, capture_output=True, text=True,
            timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)} on {node.nodename}: "
                                        f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def start(self) -> RabbitMQCluster:
        self.cookie_home.mkdir(parents=True, exist_ok=True)
        cookie = self.cookie_home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        with ThreadPoolExecutor(len(self.nodes)) as pool:  # side by side; the first error raised
            list(pool.map(lambda node: node.start(), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.nodename)
            self.ctl(node, "start_app")
        self.wait_running(len(self.nodes))
        return self

    def running_nodes(self, via: ClusterNode | None = None) -> list[str]:
        """Node names the cluster reports running (asked of ``via`` or any live node)."""
        for node in [via] if via else self.nodes:
            if node is None or node.pid is None:
                continue
            try:
                status = json.loads(self.ctl(node, "cluster_status", "--formatter", "json"))
            except (ServiceError, ValueError, subprocess.TimeoutExpired):
                continue
            return [str(n) for n in status.get("running_nodes", [])]
        return []

    def wait_running(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running_nodes()) != count:
            if time.monotonic() > deadline:
                raise ServiceError(f"the cluster has not {count} running nodes")
            time.sleep(0.5)

    def leader(self, queue: str) -> ClusterNode:
        """The node that leads quorum queue ``queue``."""
        for node in self.nodes:
            if node.pid is None:
                continue
            rows = json.loads(self.ctl(node, "list_queues", "name", "leader", "--formatter",
                                       "json", "--quiet"))
            for row in rows:
                if row.get("name") == queue:
                    return next(n for n in self.nodes if n.nodename == row.get("leader"))
        raise ServiceError(f"no leader found for {queue}")

    def queues(self) -> list[dict[str, Any]]:
        """Every queue as a running node reports it: type, leader, messages and consumers."""
        for node in self.nodes:
            if node.pid is None:
                continue
            try:
                return list(json.loads(self.ctl(
                    node, "list_queues", "name", "type", "leader", "online", "messages_ready",
                    "messages_unacknowledged", "consumers", "--formatter", "json", "--quiet")))
            except (ServiceError, ValueError, subprocess.TimeoutExpired):
                continue
        return []

    def consumers(self) -> dict[str, Any]:
        """Who the cluster says holds what: consumers per queue and channels with their
        unacknowledged counts (for a failure's report)."""
        for node in self.nodes:
            if node.pid is None:
                continue
            try:
                return {
                    "consumers": json.loads(self.ctl(
                        node, "list_consumers", "queue_name", "channel_pid", "consumer_tag",
                        "prefetch_count", "active", "--formatter", "json", "--quiet")),
                    "channels": json.loads(self.ctl(
                        node, "list_channels", "pid", "name", "consumer_count",
                        "messages_unacknowledged", "--formatter", "json", "--quiet")),
                }
            except (ServiceError, ValueError, subprocess.TimeoutExpired):
                continue
        return {}

    def log_lines(self, *words: str, last: int = 30) -> dict[str, list[str]]:
        """Each node's last ``last`` log lines that hold one of ``words`` (a failure's report)."""
        found: dict[str, list[str]] = {}
        for node in self.nodes:
            try:
                text = node.log_file.read_text(errors="replace")
            except OSError:
                continue
            found[node.nodename] = [line for line in text.splitlines()
                                    if any(w in line for w in words)][-last:]
        return found

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node's Erlang VM, as a machine dying would."""
        pid = node.pid
        assert pid is not None, f"{node.nodename} is not running"
        os.kill(pid, signal.SIGKILL)
        while node.pid is not None:
            time.sleep(0.05)
        node.pid_file.unlink(missing_ok=True)

    def stop_node(self, node: ClusterNode) -> None:
        """Stop the node gracefully (``rabbitmqctl stop``: queues hand over leadership)."""
        self.ctl(node, "stop", str(node.pid_file), timeout=120)

    def start_node(self, node: ClusterNode) -> None:
        node.started = False
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            if node.pid is not None:
                node.stop(grace=0)

    def describe(self) -> dict[str, Any]:
        return {"nodes": [node.describe() for node in self.nodes]}
