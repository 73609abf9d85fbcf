"""RabbitMQ for the tests: the broker already running on 127.0.0.1:5672, or one of our own.

A broker found answering is used as it is and never stopped. Our own broker
(``rabbitmq-server -detached`` with its own node name, state directories and ports;
installed with apt-get first when running as root) is for tests that stop and restart
it. Start-up takes 5 to 15 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from imgpipe.testing.servers.base import (
    HOST,
    LocalServer,
    ServiceError,
    apt_install,
    free_ports,
    log_tail,
    read_pid,
    terminate_pid,
)

USER = "guest"
PASSWORD = "guest"
DEFAULT_PORT = 5672
LIB_BIN = Path("/usr/lib/rabbitmq/bin")


def amqp_answers(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 broker answers the protocol header on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
            return len(frame) == 7 and frame[0] == 1  # a method frame: Connection.Start
    except OSError:
        return False


class RabbitMQServer(LocalServer):
    """A RabbitMQ broker on loopback: one found running (``started`` False) or ours."""

    kind: ClassVar[str] = "rabbitmq"
    program: ClassVar[str] = "rabbitmq-server"
    start_timeout: ClassVar[float] = 120.0

    def __init__(self, state_dir: Path, port: int = DEFAULT_PORT, *, started: bool = False,
                 dist_port: int = 0) -> None:
        super().__init__(state_dir)
        self._port = port
        self.dist_port = dist_port or port + 20000
        self.started = started
        self.user = USER
        self.password = PASSWORD
        self.nodename = f"imgpipe-{port}@localhost"
        self.pid_file = self.state_dir / "rabbitmq.pid"
        self.log_file = self.state_dir / "log" / f"{self.nodename}.log"

    @classmethod
    def from_saved(cls, state_dir: Path, saved: dict[str, Any]) -> RabbitMQServer:
        ports = saved.get("ports", {})
        return cls(state_dir, int(ports.get("amqp", DEFAULT_PORT)),
                   started=bool(saved.get("started")), dist_port=int(ports.get("dist", 0)))

    @classmethod
    def install(cls) -> str:
        if not amqp_answers(DEFAULT_PORT) and not (LIB_BIN / "rabbitmq-server").exists():
            apt_install("rabbitmq-server")
        return str(LIB_BIN / "rabbitmq-server")

    @property
    def url(self) -> str:
        """The AMQP URL with credentials, e.g. ``amqp://guest:guest@127.0.0.1:5672/``."""
        return f"amqp://{self.user}:{self.password}@{HOST}:{self._port}/"

    def ports(self) -> dict[str, int]:
        return {"amqp": self._port, "dist": self.dist_port}

    @property
    def pid(self) -> int | None:
        """The pid of a broker we started, if it runs."""
        return read_pid(self.pid_file, "beam") if self.started else None

    @property
    def running(self) -> bool:
        """Whether the broker answers (ours: whether our process is alive)."""
        return self.pid is not None if self.started else amqp_answers(self._port)

    def ready(self) -> bool:
        return amqp_answers(self._port)

    def env(self) -> dict[str, str]:
        return {"AMQP_URL": self.url, "RABBITMQ_USER": self.user,
                "RABBITMQ_PASSWORD": self.password}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"started": self.started}

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

    def start(self, timeout: float | None = None) -> RabbitMQServer:
        """Start our own broker with state under ``state_dir`` unless one answers already."""
        timeout = timeout or self.start_timeout
        if amqp_answers(self._port):
            return self
        server = LIB_BIN / "rabbitmq-server"
        if not server.exists():
            apt_install("rabbitmq-server")
            if amqp_answers(self._port):  # the package's own service came up
                return self
        base = self.state_dir
        (base / "log").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{self._port}\nloopback_users.guest = true\n")
        (base / "rabbitmq-env.conf").write_text("")
        (base / "enabled_plugins").write_text("[].\n")
        env = self._environ()
        quiet: dict[str, Any] = {"env": env, "cwd": base, "stdout": subprocess.DEVNULL,
                                 "stderr": subprocess.DEVNULL}
        subprocess.run([str(server), "-detached"], check=True, **quiet)
        subprocess.run([str(LIB_BIN / "rabbitmqctl"), "-n", self.nodename, "wait", "--timeout",
                        str(int(timeout)), str(self.pid_file)], check=False, **quiet)
        deadline = time.monotonic() + 10
        while not amqp_answers(self._port):
            if time.monotonic() > deadline:
                raise ServiceError(f"RabbitMQ did not start; log {self.log_file}:\n"
                                   f"{log_tail(self.log_file)}")
            time.sleep(0.2)
        self.started = True
        return self

    def stop(self, grace: float = 60.0, sig: int = signal.SIGTERM) -> None:
        """Stop the broker if we started it; a broker found running is left alone."""
        if not self.started:
            return
        pid = self.pid
        if pid is not None:
            terminate_pid(pid, grace, sig=sig)
        self.pid_file.unlink(missing_ok=True)


def ensure_rabbitmq(state_dir: Path, port: int = DEFAULT_PORT, *,
                    fallback_ports: str = "default") -> RabbitMQServer:
    """A running broker: the one on ``port`` if it answers, else one we start.

    With ``fallback_ports="auto"`` our own broker gets free ports instead of ``port``.
    """
    if amqp_answers(port):
        return RabbitMQServer(state_dir, port)
    if fallback_ports == "auto":
        port, dist_port = free_ports(2)
    else:
        dist_port = port + 20000
    return RabbitMQServer(state_dir, port, dist_port=dist_port).start()


def start_rabbitmq(state_dir: Path, ports: str = "auto") -> RabbitMQServer:
    """Start a private broker of our own under ``state_dir`` (never the shared one):
    for tests that stop and restart it."""
    port, dist_port = (DEFAULT_PORT, DEFAULT_PORT + 20000) if ports == "default" else free_ports(2)
    if amqp_answers(port):
        raise ServiceError(f"a broker already listens on {HOST}:{port}")
    return RabbitMQServer(state_dir, port, dist_port=dist_port).start()
