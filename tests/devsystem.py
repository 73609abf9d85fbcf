"""Running ``imgpipe dev`` for a test: one process, on either backend set.

:class:`DevProcess` has the same surface as :class:`tests.system.System`
(``upload_url``, ``env``, ``log``), so the end-to-end scenarios run on it
unchanged. ``env`` holds the settings in effect; the process itself is
started without backend URLs on the embedded set, as a person would run it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.servers import services

IMGPIPE = [sys.executable, "-m", "imgpipe.cli"]
BACKEND_URLS = ("AMQP_URL", "S3_URL", "COUCHDB_URL")
_SERVICE_PREFIXES = ("AMQP_", "S3_", "COUCHDB_", "RABBITMQ_", "UPLOAD_", "IMAGEPROC_", "RUNNER_",
                     "PROVENANCE_")


class DevProcess:
    """``imgpipe dev`` as a subprocess with its own port, data directory and names."""

    def __init__(self, env: dict[str, str], data_dir: Path, logs: Path, *, embedded: bool) -> None:
        self.env = dict(env)
        self.data_dir = data_dir
        self.logs = logs
        self.embedded = embedded
        [self.port] = services.free_ports(1)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def upload_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch_env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_PREFIXES)}
        own = {k: v for k, v in self.env.items() if not (self.embedded and k in BACKEND_URLS)}
        return base | own | {"SHUTDOWN_GRACE": "5"}

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        self.starts += 1
        out = open(self.logs / f"dev-{self.starts}.out", "wb")  # noqa: SIM115 - closed below
        err = open(self.logs / f"dev-{self.starts}.err", "wb")  # noqa: SIM115 - closed below
        self.proc = subprocess.Popen(
            [*IMGPIPE, "dev", "--port", str(self.port), "--data-dir", str(self.data_dir), *extra],
            env=self.launch_env(), stdout=out, stderr=err,
        )
        out.close()
        err.close()
        return self.proc

    def output(self, start: int | None = None) -> str:
        path = self.logs / f"dev-{start or self.starts}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, key: str = "", start: int | None = None) -> str:
        path = self.logs / f"dev-{start or self.starts}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_ready(self, timeout: float = 90) -> None:
        """Wait until ``imgpipe dev`` printed where to open the page."""
        deadline = time.monotonic() + timeout
        while "imgpipe dev is running" not in self.output():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"imgpipe dev exited with {self.proc.returncode}:\n"
                                     f"{self.output()}\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"imgpipe dev not ready after {timeout}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session, session.get(
            f"{self.upload_url}/readyz"
        ) as resp:
            assert resp.status == 200, await resp.text()

    def wait_ready_sync(self, timeout: float = 90) -> None:
        """:meth:`wait_ready` for fixtures outside an event loop."""
        deadline = time.monotonic() + timeout
        while "imgpipe dev is running" not in self.output():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"imgpipe dev did not start:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, key: str = "", sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Stop the process (Ctrl-C by default) and return its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode
