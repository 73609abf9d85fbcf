"""A three-node Apache CouchDB cluster on loopback, for the CouchDB cluster fault test.

The nodes run from one unpacked copy of the release that ``IMGPIPE_COUCHDB_RELEASE``
names (its ``couchdb-*-rel.tgz``). Each node has a ``vm.args`` and a ``local.ini`` of
its own (the release's ``bin/couchdb`` reads ``COUCHDB_ARGS_FILE`` and
``COUCHDB_INI_FILES``): node name ``couchdbN@127.0.0.1``, HTTP port, Erlang
distribution port and data directory. All share the Erlang cookie, the admin, the
``[couchdb] uuid`` and the ``[chttpd_auth] secret``, and one epmd of the cluster's own
(``ERL_EPMD_PORT``, on 127.0.0.1), so that they find each other and no other Erlang
node. Databases get ``n = 3`` copies of ``q = 1`` shard: every node holds a whole copy.

Node 1 adds the others (``PUT /_node/_local/_nodes/couchdbN@127.0.0.1``) and
``POST /_cluster_setup`` ``finish_cluster`` creates the system databases. A node killed
comes back with :meth:`CouchDBCluster.start_node` at the same port with its data; the
other nodes copy it what it missed (CouchDB's internal replication). Start-up takes
about 10 s.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tarfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from imgpipe.testing.servers.base import HOST, ServiceError, free_ports, http
from imgpipe.testing.servers.couchdb import PASSWORD, RELEASE_SETTING, USER, LocalCouchDB


def release_archive(release: Path) -> Path:
    """The release archive in ``release`` (the directory ``IMGPIPE_COUCHDB_RELEASE`` names)."""
    found = sorted(Path(release).glob("couchdb-*-rel.tgz"))
    if not found:
        raise ServiceError(f"{RELEASE_SETTING}={release}: no couchdb-*-rel.tgz there")
    return found[-1]


class ClusterNode(LocalCouchDB):
    """One CouchDB node of the cluster, run from the cluster's copy of the release."""

    program: ClassVar[str] = "couchdb"
    implementation: ClassVar[str] = "Apache CouchDB node"

    def __init__(self, cluster: CouchDBCluster, number: int, port: int, dist_port: int) -> None:
        super().__init__(cluster.state_dir / f"couchdb{number}", port, user=cluster.user,
                         password=cluster.password)
        self.cluster = cluster
        self.number = number
        self.dist_port = dist_port
        self.nodename = f"couchdb{number}@{HOST}"

    def ports(self) -> dict[str, int]:
        return {"http": self._port, "dist": self.dist_port}

    def configure(self) -> None:
        """Write this node's vm.args and local.ini (the admin's password is hashed into
        local.ini at the first start)."""
        root = self.cluster.root
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [line for line in (root / "etc" / "vm.args").read_text().splitlines()
                if not line.startswith(("-name ", "-setcookie", "-kernel inet_dist_listen"))]
        args += [f"-name {self.nodename}", f"-setcookie {self.cluster.cookie}",
                 f"-kernel inet_dist_listen_min {self.dist_port} "
                 f"inet_dist_listen_max {self.dist_port}"]
        (self.state_dir / "vm.args").write_text("\n".join(args) + "\n")
        (self.state_dir / "local.ini").write_text(f"""\
[couchdb]
single_node = false
uuid = {self.cluster.uuid}
database_dir = {self.data_dir}
view_index_dir = {self.data_dir}
[cluster]
n = 3
q = 1
[chttpd]
port = {self._port}
bind_address = {HOST}
[chttpd_auth]
secret = {self.cluster.secret}
[smoosh]
state_dir = {self.data_dir}
[admins]
{self.user} = {self.password}
""")

    def argv(self) -> list[str]:
        return [str(self.cluster.root / "bin" / "couchdb")]

    def launch(self) -> None:
        if not (self.state_dir / "local.ini").exists():
            self.configure()
        root = self.cluster.root
        env = os.environ | {
            "COUCHDB_ARGS_FILE": str(self.state_dir / "vm.args"),
            # the node's own local.ini last: CouchDB writes config changes to the last file
            "COUCHDB_INI_FILES": f"{root / 'etc' / 'default.ini'} {self.state_dir / 'local.ini'}",
            "ERL_EPMD_PORT": str(self.cluster.epmd_port), "ERL_EPMD_ADDRESS": HOST,
        }
        self.process.spawn(self.argv(), cwd=root, env=env)

    def ready(self) -> bool:
        status, _ = http("GET", self.url + "/_up", timeout=2)
        return status == 200 and self.admin_works()

    def get(self, path: str, timeout: float = 10) -> Any:
        """``GET path`` on this node as the admin: the JSON answer (ServiceError otherwise)."""
        status, body = http("GET", self.url + path, headers=self.auth_headers(), timeout=timeout)
        if status != 200:
            raise ServiceError(f"GET {path} on {self.nodename}: {status} {body[:300]!r}")
        return json.loads(body)

    def membership(self) -> dict[str, list[str]]:
        """``/_membership`` as this node sees it: ``all_nodes`` (connected now) and
        ``cluster_nodes`` (members)."""
        return dict(self.get("/_membership", timeout=3))

    def local_docs(self, db: str) -> dict[str, str]:
        """Document id -> revision in this node's own copy of ``db`` (its shard file,
        read through ``/_node/_local/``: no other node is asked)."""
        prefix = f"shards/00000000-ffffffff/{db}."
        shards = [name for name in self.get("/_node/_local/_all_dbs")
                  if str(name).startswith(prefix)]
        if len(shards) != 1:
            raise ServiceError(f"{self.nodename} holds {shards} for {db} (one shard expected)")
        quoted = urllib.parse.quote(shards[0], safe="")
        rows = self.get(f"/_node/_local/{quoted}/_all_docs", timeout=30)["rows"]
        return {str(row["id"]): str(row["value"]["rev"]) for row in rows}


class CouchDBCluster:
    """Three (``size``) clustered CouchDB nodes; ``url``/``env()`` name node 1."""

    def __init__(self, state_dir: Path, release: Path, size: int = 3, *, user: str = USER,
                 password: str = PASSWORD) -> None:
        self.state_dir = Path(state_dir)
        self.release = Path(release)
        self.root = self.state_dir / "couchdb"
        self.user = user
        self.password = password
        self.cookie = secrets.token_hex(16)
        self.uuid = secrets.token_hex(16)
        self.secret = secrets.token_hex(16)
        ports = free_ports(2 * size + 1)
        self.epmd_port = ports[-1]
        self.nodes = [ClusterNode(self, n + 1, ports[2 * n], ports[2 * n + 1])
                      for n in range(size)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def env(self) -> dict[str, str]:
        """The settings that point imgpipe at node 1."""
        return self.nodes[0].env()

    def unpack(self) -> None:
        if (self.root / "bin" / "couchdb").exists():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(release_archive(self.release)) as archive:
            archive.extractall(self.state_dir, filter="tar")
        if not (self.root / "bin" / "couchdb").exists():
            raise ServiceError(f"{self.release}: the archive holds no couchdb/bin/couchdb")

    def start(self) -> CouchDBCluster:
        """Start every node, join them, create the system databases; return once every
        node reports all of them connected and members."""
        self.unpack()
        with ThreadPoolExecutor(len(self.nodes)) as pool:  # side by side; the first error raised
            list(pool.map(lambda node: node.start(), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.request(first, "PUT", f"/_node/_local/_nodes/{node.nodename}", {})
        self.wait_joined()
        self.request(first, "POST", "/_cluster_setup", {"action": "finish_cluster"})
        return self

    def request(self, node: ClusterNode, method: str, path: str, body: Any) -> Any:
        status, answer = http(method, node.url + path, body=json.dumps(body).encode(),
                              headers=node.auth_headers(), timeout=30)
        if status not in (200, 201, 202):
            raise ServiceError(f"{method} {path} on {node.nodename}: {status} {answer[:300]!r}")
        return json.loads(answer)

    def joined(self) -> bool:
        """Whether every node is up and sees every node as a member and connected."""
        names = sorted(node.nodename for node in self.nodes)
        for node in self.nodes:
            try:
                seen = node.membership()
            except (ServiceError, OSError, ValueError):
                return False
            if sorted(seen.get("all_nodes", [])) != names \
                    or sorted(seen.get("cluster_nodes", [])) != names:
                return False
        return True

    def wait_joined(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.joined():
            if time.monotonic() > deadline:
                seen = {}
                for node in self.nodes:
                    try:
                        seen[node.nodename] = node.membership()
                    except (ServiceError, OSError, ValueError) as exc:
                        seen[node.nodename] = {"error": [str(exc)]}
                raise ServiceError(f"the CouchDB cluster did not join: {seen}")
            time.sleep(0.2)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL the node's Erlang VM, as a machine dying would."""
        assert node.pid is not None, f"{node.nodename} is not running"
        node.process.terminate(grace=10, sig=signal.SIGKILL)  # returns once it is reaped

    def start_node(self, node: ClusterNode) -> None:
        """Start a stopped node again (same ports, same data) and wait until the cluster
        has every node again."""
        node.start()
        self.wait_joined()

    def stop(self) -> None:
        for node in self.nodes:  # their data is thrown away: no need for a clean exit
            node.process.terminate(grace=10, sig=signal.SIGKILL)
        epmd = next(self.root.glob("erts-*/bin/epmd"), None)
        if epmd is not None:
            subprocess.run([str(epmd), "-port", str(self.epmd_port), "-kill"],
                           capture_output=True, check=False, timeout=10)

    def describe(self) -> dict[str, Any]:
        return {"epmd_port": self.epmd_port, "nodes": [node.describe() for node in self.nodes]}
