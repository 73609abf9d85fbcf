"""What every local server of the harness shares: ports, processes, and the base class.

:class:`LocalServer` is a server on 127.0.0.1 that the harness installs, starts and
stops, its pid file, log and data under one state directory. ``stop()`` then ``start()``
brings it back at the same URL with the same data. A subclass says how to install it,
the command that starts it (or how to launch it), and when it is ready.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 15.0


class ServiceError(RuntimeError):
    """A server could not be installed, started or stopped."""


def free_ports(count: int, *, pair_offset: int = 0) -> list[int]:
    """``count`` distinct loopback TCP ports that were free a moment ago.

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


def free_port() -> int:
    """One loopback TCP port that was free a moment ago."""
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http(method: str, url: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One HTTP request with the standard library: status and body (errors included)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def read_pid(path: Path, marker: str) -> int | None:
    """The live pid in ``path`` whose command line contains ``marker`` (never a stranger)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and marker in cmdline(pid) else None


def terminate_pid(pid: int, grace: float, popen: subprocess.Popen[bytes] | None = None,
                  sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (SIGKILL after ``grace`` seconds) and wait until ``pid`` is gone."""
    def gone() -> bool:
        if popen is not None and popen.pid == pid:
            return popen.poll() is not None
        return not pid_alive(pid)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
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


_LIBC = ctypes.CDLL(None, use_errno=True)


def _set_parent_death_signal() -> None:
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the server dies with its parent


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def apt_install(*packages: str) -> None:
    """Install Debian packages (only as root with apt-get; otherwise say what is missing)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"missing {' '.join(packages)}; install it (apt-get needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)


class ManagedProcess:
    """A background process with its pid file and log file in one directory.

    ``marker`` must appear in the process's command line, so that a stale pid file
    never makes us signal an unrelated process.
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
        return read_pid(self.pid_file, self.marker)

    def spawn(self, argv: list[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None, die_with_parent: bool = False) -> int:
        """Start ``argv`` in the background, its output appended to the log file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {datetime.datetime.now().isoformat()} {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_set_parent_death_signal if die_with_parent else None,  # noqa: PLW1509
            )
        self.pid_file.write_text(f"{self._popen.pid}\n")
        return self._popen.pid

    def exited(self) -> bool:
        """Whether a process we spawned has already exited."""
        return self._popen is not None and self._popen.poll() is not None

    def terminate(self, grace: float = STOP_GRACE_SECONDS, sig: int = signal.SIGTERM) -> None:
        """``sig`` (SIGTERM), then SIGKILL after ``grace`` seconds; wait until it is gone."""
        pid = self.pid
        if pid is not None:
            terminate_pid(pid, grace, self._popen, sig)
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
                raise ServiceError(f"{self.name} exited while starting ({what});"
                                   f" log {self.log_file}:\n{log_tail(self.log_file)}")
            with contextlib.suppress(OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} not ready after {timeout:.0f} s ({what});"
                                   f" log {self.log_file}:\n{log_tail(self.log_file)}")
            time.sleep(0.1)


class LocalServer:
    """A server on loopback with its pid, log and data under ``state_dir``.

    Subclasses set ``kind`` (the key in ``server.json`` files and in messages), give
    :meth:`argv` (or override :meth:`launch`), :attr:`url`, :meth:`ports`, :meth:`ready`
    and :meth:`env`; :meth:`install` makes the program available once.
    """

    kind: ClassVar[str] = "server"
    program: ClassVar[str] = "server"
    start_timeout: ClassVar[float] = 60.0

    def __init__(self, state_dir: Path, *, die_with_parent: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.data_dir = self.state_dir / "data"
        self.die_with_parent = die_with_parent
        self.process = ManagedProcess(self.state_dir, self.program, str(self.state_dir))

    # what a subclass says ------------------------------------------------------------

    @property
    def url(self) -> str:
        raise NotImplementedError

    def ports(self) -> dict[str, int]:
        """The ports this server listens on, by name."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers real requests now."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The project's environment variables that select this server."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line that starts the server (see :meth:`launch`)."""
        raise NotImplementedError

    @classmethod
    def install(cls) -> str:
        """Make the program available (once); what was found or installed."""
        return cls.program

    def launch(self) -> None:
        """Start the server process; by default :meth:`argv` under :class:`ManagedProcess`."""
        self.process.spawn(self.argv(), cwd=self.state_dir, die_with_parent=self.die_with_parent)

    def after_start(self) -> None:
        """Anything to do once the server is ready (say, create a user)."""

    def after_stop(self) -> None:
        """Anything to tidy once the process is gone."""

    # the same for every server -------------------------------------------------------

    @property
    def port(self) -> int:
        """The port of the server's main API."""
        return next(iter(self.ports().values()))

    @property
    def pid(self) -> int | None:
        """The pid of the running server process, or None."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the server's process is alive."""
        return self.pid is not None

    def describe(self) -> dict[str, Any]:
        """What ``status`` and ``env`` need to know about this server (``server.json``)."""
        return {"url": self.url, "ports": self.ports(), "env": self.env(), "pid": self.pid}

    def start(self, timeout: float | None = None) -> LocalServer:
        """Start the server unless it runs; return once :meth:`ready`."""
        if self.running:
            return self
        self.install()
        busy = [name for name, port in self.ports().items() if port_open(port)]
        if busy:
            raise ServiceError(f"{self.kind} ports in use: {', '.join(busy)} ({self.ports()})")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.launch()
        write_json(self.state_dir / "server.json", self.describe())
        self.process.wait_until(self.ready, timeout or self.start_timeout,
                                f"{self.kind} at {self.url}")
        self.after_start()
        return self

    def stop(self, grace: float = STOP_GRACE_SECONDS, sig: int = signal.SIGTERM) -> None:
        """Stop the server (``sig``, SIGKILL after ``grace``); its data stays."""
        self.process.terminate(grace, sig)
        self.after_stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid}>"


S = TypeVar("S", bound=LocalServer)


def start_on_free_ports(make: Callable[[], S], attempts: int = 3,
                        timeout: float | None = None) -> S:
    """``make()`` a server on ports free a moment ago and start it; on a failed start
    (say, a port taken meanwhile) try again with a fresh one."""
    for attempt in range(attempts):
        server = make()
        try:
            server.start(timeout)
            return server
        except ServiceError:
            server.stop(grace=5)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
