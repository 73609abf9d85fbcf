"""`imgpipe dev`: the whole system in one process, no servers needed.

The four services run side by side in one event loop: upload on
``--host``/``--port`` (default http://localhost:8000), imageproc on a free
loopback port, one runner and the provenance recorder. Each backend whose URL
is not configured is the embedded one, kept under ``--data-dir`` (default
``./.imgpipe``): ``broker/``, ``objects/`` and ``provenance/``. A configured
URL (``AMQP_URL``/``AMQP_HOST``, ``S3_URL``, ``COUCHDB_URL``) selects that
server instead, so the same command runs against real servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
from pydantic_settings import BaseSettings, SettingsConfigDict

from imgpipe.broker.open import open_broker
from imgpipe.broker.protocol import Broker
from imgpipe.errors import ConfigError, ImgpipeError
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.provenance.settings import ProvenanceSettings
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.config import load
from imgpipe.runtime.fileurl import embedded_path, embedded_url, is_embedded
from imgpipe.runtime.lifecycle import StopSignal
from imgpipe.runtime.logs import setup_logging
from imgpipe.upload.settings import UploadSettings

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".imgpipe")
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class DevSettings:
    """The settings of each service of ``imgpipe dev``, derived from one set of options."""

    upload: UploadSettings
    runner: RunnerSettings
    provenance: ProvenanceSettings
    imageproc: ImageprocSettings
    data_dir: Path

    @classmethod
    def build(cls, *, data_dir: Path | None = None, host: str | None = None,
              port: int | None = None, **overrides: Any) -> DevSettings:
        """Settings from the environment, with embedded backends where none is configured.

        ``overrides`` are settings by field name (``amqp_url=...``), as if set
        in the environment.
        """
        data = (data_dir or DEFAULT_DATA_DIR).resolve()
        given = load(UploadSettings, **overrides)
        configured = given.model_fields_set
        backends: dict[str, Any] = {}
        if not {"amqp_url", "amqp_host"} & configured:
            backends["amqp_url"] = embedded_url(data / "broker")
        if "s3_url" not in configured:
            backends["s3_url"] = embedded_url(data / "objects")
        if "couchdb_url" not in configured:
            backends["couchdb_url"] = embedded_url(data / "provenance")
        common = {**overrides, **backends, **_dev_signing(data, overrides)}
        if "log_format" not in configured:
            common["log_format"] = "text"
        return cls(
            upload=load(UploadSettings, **common, upload_host=host, upload_port=port),
            runner=load(RunnerSettings, **common, runner_host="127.0.0.1", runner_port=0),
            provenance=load(ProvenanceSettings, **common, provenance_host="127.0.0.1",
                            provenance_port=0),
            imageproc=load(ImageprocSettings, **common, imageproc_host="127.0.0.1",
                           imageproc_port=0),
            data_dir=data,
        )

    def page_url(self, port: int | None = None) -> str:
        host = self.upload.upload_host
        if host in ("127.0.0.1", "0.0.0.0", "::", "localhost", ""):
            host = "localhost"
        return f"http://{host}:{port or self.upload.upload_port}"

    def backend_lines(self) -> list[tuple[str, str]]:
        """Where each backend is, for people (no credentials)."""

        def where(url: str, server: str) -> str:
            if is_embedded(url):
                return f"{embedded_path(url)} (embedded)"
            parts = urlsplit(url)
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{parts.hostname}{port} ({server})"

        s = self.upload
        return [
            ("broker", where(s.broker_url(), "RabbitMQ")),
            ("objects", where(s.s3_url, "S3")),
            ("provenance", where(s.couchdb_url, "CouchDB")),
        ]


class _SigningChoice(BaseSettings):
    """Just what ``imgpipe dev`` needs to know to decide whether it makes the signing key."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)

    c2pa_sign: bool | None = None
    c2pa_cert_chain: Path | None = None
    c2pa_trust_anchors: Path | None = None


DEV_CREDENTIALS = "credentials"
"""The folder of the data directory where ``imgpipe dev`` keeps its development chain."""


def _dev_signing(data: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Sign out of the box: C2PA_SIGN unset (or on with no chain) uses a development chain.

    The chain is made on first start under ``data/credentials`` and kept; its CA
    is trusted by this dev system's own readers unless C2PA_TRUST_ANCHORS is set.
    """
    choice = _SigningChoice(**{k: v for k, v in overrides.items()
                               if k in _SigningChoice.model_fields})
    if choice.c2pa_sign is False or choice.c2pa_cert_chain is not None:
        return {}
    from imgpipe.credentials.chain import ensure_chain

    files = ensure_chain(data / DEV_CREDENTIALS, purpose="development")
    signing: dict[str, Any] = {"c2pa_sign": True, "c2pa_cert_chain": files.chain,
                               "c2pa_private_key": files.key}
    if choice.c2pa_trust_anchors is None:
        signing["c2pa_trust_anchors"] = files.ca
    return signing


def banner(settings: DevSettings, port: int) -> str:
    url = settings.page_url(port)
    lines = [f"imgpipe dev is running: open {url}", ""]
    lines += [f"  {name:<11} {where}" for name, where in settings.backend_lines()]
    embedded = any(is_embedded(u) for u in (settings.upload.broker_url(), settings.upload.s3_url,
                                            settings.upload.couchdb_url))
    if embedded:
        lines.append(f"  {'data':<11} {settings.data_dir} (kept across restarts)")
    signing = settings.imageproc
    if signing.c2pa_sign and signing.c2pa_cert_chain is not None:
        dev_chain = signing.c2pa_cert_chain.parent == settings.data_dir / DEV_CREDENTIALS
        lines.append(f"  {'signing':<11} {signing.c2pa_cert_chain}"
                     f"{' (DEVELOPMENT chain, not for production)' if dev_chain else ''}")
    else:
        lines.append(f"  {'signing':<11} off")
    lines += [
        "",
        f"  upload:  curl -F file=@photo.jpg {url}/upload",
        f"  status:  curl {url}/jobs/JOB_ID",
        "  stop:    Ctrl-C",
    ]
    anchors = settings.upload.c2pa_trust_anchors
    if settings.imageproc.c2pa_sign and anchors is not None:
        lines.append(f"  check:   C2PA_TRUST_ANCHORS={anchors} imgpipe verify --file OUTPUT")
    return "\n".join(lines)


class DevSystem:
    """The four services of ``imgpipe dev`` in the running event loop."""

    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.imageproc_url = ""
        self._stops = {name: asyncio.Event()
                       for name in ("upload", "runner", "provenance", "imageproc")}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._broker: Broker | None = None

    async def start(self) -> None:
        """Start every service; return once the upload service answers ``/readyz``."""
        from imgpipe.imageproc import run_imageproc
        from imgpipe.provenance.service import run_provenance
        from imgpipe.runner.service import run_runner
        from imgpipe.upload.service import run_upload

        s = self.settings
        if is_embedded(s.upload.amqp_url):
            # held for the whole run: the broker's lock is taken before anything else opens
            self._broker = await open_broker(s.upload, name="imgpipe-dev")
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._start("imageproc", lambda: run_imageproc(
            s.imageproc, stop=self._stops["imageproc"], listening=listening.set_result))
        started: list[asyncio.Future[Any]] = [listening, self._tasks["imageproc"]]
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            self._tasks["imageproc"].result()  # its error; or it stopped on its own
        self.imageproc_url = listening.result()
        imageproc = {"imageproc_url": self.imageproc_url}
        runner = s.runner.model_copy(update=imageproc)
        upload = s.upload.model_copy(update=imageproc)
        services: dict[str, Callable[[], Awaitable[None]]] = {
            "provenance": lambda: run_provenance(s.provenance, stop=self._stops["provenance"]),
            "runner": lambda: run_runner(runner, stop=self._stops["runner"]),
            "upload": lambda: run_upload(upload, stop=self._stops["upload"]),
        }
        for name, run in services.items():
            self._start(name, run)
        await self._until_ready()

    def _start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._guard(name, run), name=f"dev-{name}")

    async def _guard(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        await run()
        if not self._stops[name].is_set():
            raise ImgpipeError(f"the {name} service stopped on its own")

    async def _until_ready(self) -> None:
        url = f"http://127.0.0.1:{self.settings.upload.upload_port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + READY_TIMEOUT
            while True:
                for task in self._tasks.values():
                    if task.done():
                        task.result()
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                if loop.time() > deadline:
                    raise ImgpipeError(f"imgpipe did not become ready within {READY_TIMEOUT:.0f}s")
                await asyncio.sleep(0.1)

    async def wait(self) -> None:
        """Return when a service stops by itself (raising its error)."""
        done, _ = await asyncio.wait(self._tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        """Stop intake first, then the runner's work, then provenance, then imageproc."""
        for group in (("upload", "runner"), ("provenance",), ("imageproc",)):
            for name in group:
                self._stops[name].set()
            tasks = [self._tasks[n] for n in group if n in self._tasks]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for name, result in zip(group, results, strict=False):
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    log.warning("%s stopped with an error: %s", name, result)
        if self._broker is not None:
            await self._broker.close()
            self._broker = None


async def run_dev(settings: DevSettings, *, out: TextIO = sys.stdout,
                  stop: asyncio.Event | None = None) -> None:
    """Run everything until SIGTERM/SIGINT (or ``stop``), then stop in order."""
    system = DevSystem(settings)
    try:
        await system.start()
        print(banner(settings, settings.upload.upload_port), file=out, flush=True)
        signal = StopSignal(stop)
        waiters = [asyncio.ensure_future(system.wait()), asyncio.ensure_future(signal.wait())]
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.close()
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        for task in done:
            task.result()
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise ConfigError(
            f"cannot listen on {settings.upload.upload_host}:{settings.upload.upload_port} "
            f"({exc.strerror or exc}); choose another port with --port"
        ) from None
    finally:
        await system.stop()
    print("imgpipe dev stopped", file=out, flush=True)


def _command(args: argparse.Namespace) -> int:
    settings = DevSettings.build(data_dir=args.data_dir, host=args.host, port=args.port)
    setup_logging("dev", settings.upload.log_level, settings.upload.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_dev(settings))
    return 0


def add_command(sub: Any) -> None:
    """Register ``imgpipe dev`` on the CLI's subcommands."""
    help_ = "Run the whole system in one process; no servers needed."
    p = sub.add_parser("dev", help=help_, description=help_ + " " + _DEV_EPILOG)
    p.add_argument("--port", type=int, default=None,
                   help="port of the upload service and page (env UPLOAD_PORT, default 8000)")
    p.add_argument("--host", default=None,
                   help="address to listen on (env UPLOAD_HOST, default 127.0.0.1)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="where the embedded backends keep their data (default ./.imgpipe)")
    p.set_defaults(func=_command)


_DEV_EPILOG = (
    "Backends are embedded and kept under --data-dir unless AMQP_URL (or AMQP_HOST), "
    "S3_URL or COUCHDB_URL name a server."
)
