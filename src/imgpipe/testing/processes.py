"""imgpipe's own processes for a test or a benchmark: the four services, or ``imgpipe dev``.

:class:`ServiceProcesses` runs ``imgpipe <service>`` processes for one run: the backends'
settings it is given, the run's names (:class:`~imgpipe.testing.names.RunNames`), a free
port per process and a log file per process under ``logs``. A test may stop (SIGTERM,
SIGKILL) and start any of them again mid-run, or start a second instance under another
key. :class:`DevProcess` does the same for ``imgpipe dev``. Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from imgpipe.testing.names import RunNames
from imgpipe.testing.servers.base import ServiceError, free_port, free_ports

IMGPIPE = [sys.executable, "-m", "imgpipe.cli"]
SERVICES = ("imageproc", "provenance", "upload-server", "runner")
PORT_SETTINGS = {
    "upload-server": "UPLOAD_PORT",
    "imageproc": "IMAGEPROC_PORT",
    "runner": "RUNNER_PORT",
    "provenance": "PROVENANCE_PORT",
}
BACKEND_URLS = ("AMQP_URL", "S3_URL", "COUCHDB_URL")
#: settings of the environment a process must not inherit from the caller's
_OWN_PREFIXES = ("AMQP_", "S3_", "COUCHDB_", "RABBITMQ_", "UPLOAD_", "IMAGEPROC_", "RUNNER_",
                 "PROVENANCE_")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 20) -> int:
    """Send ``sig`` and wait (SIGKILL after ``timeout``); the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def wait_answering(url: str, *, timeout: float = 60, status: int = 200,
                         proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    """Poll ``url`` until it answers ``status``; fail early when ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            if proc is not None and proc.poll() is not None:
                raise ServiceError(f"{what or url} exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"{what or url} did not answer {status} within {timeout} s")
            await asyncio.sleep(0.05)


class ServiceProcesses:
    """The services of one run as ``imgpipe <service>`` processes, with names of their own."""

    def __init__(self, name: str, backends: Mapping[str, str], logs: Path, *,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
        self.env: dict[str, str] = {
            **backends, **RunNames(name).env(), "IMAGEPROC_URL": self.url("imageproc"),
            "SHUTDOWN_GRACE": "5", **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def names(self) -> RunNames:
        return RunNames(self.name)

    @property
    def upload_url(self) -> str:
        return self.url("upload-server")

    def url(self, key: str) -> str:
        """The base URL of the process started under ``key``."""
        return f"http://127.0.0.1:{self.ports[key]}"

    def start(self, service: str, *, key: str | None = None,
              **extra: str) -> subprocess.Popen[bytes]:
        """Start ``imgpipe <service>``; ``key`` names a further instance (e.g. 'runner-2'),
        ``extra`` overrides settings for this process only."""
        key = key or service
        port = self.ports.setdefault(key, free_port())
        env = os.environ | self.env | {PORT_SETTINGS[service]: str(port)} | extra
        with open(self.logs / f"{key}.log", "ab") as log:
            proc = subprocess.Popen([*IMGPIPE, service], env=env, stdout=log, stderr=log)
        self.procs[key] = proc
        return proc

    def stop(self, key: str, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Stop the process under ``key``; its exit status."""
        return stop_process(self.procs.pop(key), sig, timeout)

    def __enter__(self) -> ServiceProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self, timeout: float = 20) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for key in list(self.procs):
            self.stop(key, timeout=timeout)

    def log(self, key: str) -> str:
        path = self.logs / f"{key}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self) -> dict[str, int]:
        return {key: proc.pid for key, proc in self.procs.items()}

    async def wait_ready(self, *keys: str, timeout: float = 60) -> None:
        """Wait until each process's ``/readyz`` answers 200 (no keys: every process)."""
        async def one(key: str) -> None:
            try:
                await wait_answering(f"{self.url(key)}/readyz", timeout=timeout,
                                     proc=self.procs[key], what=key)
            except ServiceError as exc:
                raise ServiceError(f"{exc}; its log:\n{self.log(key)[-3000:]}") from None

        await asyncio.gather(*(one(k) for k in keys or list(self.procs)))

    async def start_all(self) -> None:
        for service in SERVICES:
            self.start(service)
        await self.wait_ready(*SERVICES)

    def start_all_sync(self) -> None:
        """:meth:`start_all` for fixtures outside an event loop."""
        asyncio.run(self.start_all())


class DevProcess:
    """``imgpipe dev`` as a subprocess with its own port, data directory and names.

    ``env`` holds the settings in effect; with ``embedded`` the process is started
    without backend URLs, as a person runs it. It has the surface of
    :class:`ServiceProcesses` that end-to-end scenarios use (``upload_url``, ``env``,
    ``log``).
    """

    def __init__(self, env: Mapping[str, str], data_dir: Path, logs: Path, *,
                 embedded: bool) -> None:
        self.env = dict(env)
        self.data_dir = data_dir
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.embedded = embedded
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra: tuple[str, ...] = ()

    @property
    def upload_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        own = {k: v for k, v in self.env.items() if not (self.embedded and k in BACKEND_URLS)}
        return base | own | {"SHUTDOWN_GRACE": "5"}

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        self.starts += 1
        self.extra = extra
        with open(self.logs / f"dev-{self.starts}.out", "wb") as out, \
                open(self.logs / f"dev-{self.starts}.err", "wb") as err:
            self.proc = subprocess.Popen(
                [*IMGPIPE, "dev", "--port", str(self.port), "--data-dir", str(self.data_dir),
                 *extra], env=self.launch_env(), stdout=out, stderr=err)
        return self.proc

    def output(self, start: int | None = None) -> str:
        path = self.logs / f"dev-{start or self.starts}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, key: str = "", start: int | None = None) -> str:
        path = self.logs / f"dev-{start or self.starts}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_ready(self, timeout: float = 90) -> None:
        """Wait until ``imgpipe dev`` printed where to open the page and is ready."""
        deadline = time.monotonic() + timeout
        while "imgpipe dev is running" not in self.output():
            assert self.proc is not None
            if (self.proc.poll() is not None and "address already in use" in self.output() + self.log()
                    and self.starts < 5):
                self.port = free_port()  # another process took the port since it was picked
                self.start(*self.extra)
                continue
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"imgpipe dev did not start (exit {self.proc.poll()}):\n"
                                   f"{self.output()}\n{self.log()[-3000:]}")
            await asyncio.sleep(0.02)
        await wait_answering(f"{self.upload_url}/readyz", timeout=10, proc=self.proc,
                             what="imgpipe dev")

    def wait_ready_sync(self, timeout: float = 90) -> None:
        """:meth:`wait_ready` for fixtures outside an event loop."""
        try:
            asyncio.run(self.wait_ready(timeout))
        except ServiceError:
            self.stop()
            raise

    def __enter__(self) -> DevProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, key: str = "", sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Stop the process (Ctrl-C by default) and return its exit status."""
        proc, self.proc = self.proc, None
        return 0 if proc is None else stop_process(proc, sig, timeout)
