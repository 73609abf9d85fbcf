"""CouchDB for the tests: Apache CouchDB from a release directory, a running CouchDB, or
pouchdb-server as the stand-in when neither is given.

Which one is chosen by settings, so that the same scripts run anywhere
(:func:`couchdb_choice`):

* ``IMGPIPE_TEST_COUCHDB_URL=http://USER:PASSWORD@HOST:PORT`` — a CouchDB that runs
  already; tests make (and remove) databases of their own on it, and never stop it.
* ``IMGPIPE_COUCHDB_RELEASE=DIR`` — a directory with an Apache CouchDB release and its
  ``start DIR PORT ADMIN PASSWORD`` script (``../shared/couchdb`` on the project's
  machines; ``scripts/test`` passes it when it exists). Each server gets a state
  directory and a port of its own; several run side by side.
* neither — pouchdb-server (npm, a Node re-implementation of CouchDB's HTTP API with
  known deviations), said in one line on stderr.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from imgpipe.testing.node import install_pouchdb_server
from imgpipe.testing.servers.base import (
    HOST,
    LocalServer,
    ServiceError,
    free_port,
    http,
    log_tail,
    start_on_free_ports,
)

USER = "admin"
PASSWORD = "imgpipe-secret"
DEFAULT_PORT = 5984
RELEASE_SETTING = "IMGPIPE_COUCHDB_RELEASE"
URL_SETTING = "IMGPIPE_TEST_COUCHDB_URL"


class CouchDBAPI:
    """What the tests use of any server speaking CouchDB's API: URL and admin account."""

    kind: ClassVar[str] = "couchdb"
    implementation: ClassVar[str] = "CouchDB"
    #: whether tests may stop and start it (a CouchDB we did not start is never stopped)
    restartable: ClassVar[bool] = True
    user: str
    password: str

    @property
    def url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {"COUCHDB_URL": self.url, "COUCHDB_USER": self.user,
                "COUCHDB_PASSWORD": self.password}

    def auth_headers(self) -> dict[str, str]:
        """Basic-auth and JSON headers for the admin user."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}", "Accept": "application/json",
                "Content-Type": "application/json"}

    def admin_works(self) -> bool:
        status, body = http("GET", self.url + "/_session", headers=self.auth_headers(), timeout=2)
        return status == 200 and "_admin" in json.loads(body).get("userCtx", {}).get("roles", [])


class LocalCouchDB(CouchDBAPI, LocalServer):
    """A CouchDB API server of ours on one loopback port, with an admin user."""

    def __init__(self, state_dir: Path, port: int, *, user: str = USER,
                 password: str = PASSWORD, die_with_parent: bool = False) -> None:
        LocalServer.__init__(self, state_dir, die_with_parent=die_with_parent)
        self._port = port
        self.user = user
        self.password = password

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def ports(self) -> dict[str, int]:
        return {"http": self._port}


class ApacheCouchDB(LocalCouchDB):
    """Apache CouchDB, one single node, started by the release's ``start`` script (in a
    session of its own: it does not die with its parent, so stop it)."""

    program: ClassVar[str] = "couchdb"
    implementation: ClassVar[str] = "Apache CouchDB"

    def __init__(self, state_dir: Path, port: int, *, release: Path, user: str = USER,
                 password: str = PASSWORD) -> None:
        super().__init__(state_dir, port, user=user, password=password)
        self.release = Path(release)

    def install(self) -> str:  # type: ignore[override]
        script = self.release / "start"
        if not os.access(script, os.X_OK):
            raise ServiceError(f"{RELEASE_SETTING}={self.release}: no executable `start` there")
        return str(script)

    def launch(self) -> None:
        done = subprocess.run([self.install(), str(self.state_dir), str(self._port), self.user,
                               self.password], capture_output=True, text=True, check=False,
                              timeout=self.start_timeout)
        if done.returncode != 0:
            raise ServiceError(f"CouchDB did not start: {done.stderr.strip()}\n"
                               f"{log_tail(self.state_dir / 'couchdb.log')}")

    def ready(self) -> bool:
        status, _ = http("GET", self.url + "/_up", timeout=2)
        return status == 200 and self.admin_works()

    def describe(self) -> dict[str, Any]:
        return LocalServer.describe(self) | {"release": str(self.release)}

    def after_stop(self) -> None:
        """Stop the node's own epmd too (the release's README says so)."""
        epmd = next(self.state_dir.glob("couchdb/erts-*/bin/epmd"), None)
        port_file = self.state_dir / "epmd.port"
        if epmd is not None and port_file.exists():
            subprocess.run([str(epmd), "-port", port_file.read_text().strip(), "-kill"],
                           capture_output=True, check=False, timeout=10)


class PouchDBServer(LocalCouchDB):
    """pouchdb-server (npm): CouchDB's HTTP API in Node, the stand-in without a release."""

    program: ClassVar[str] = "pouchdb-server"
    implementation: ClassVar[str] = "pouchdb-server"
    start_timeout: ClassVar[float] = 30.0

    @classmethod
    def install(cls) -> str:
        """Install pouchdb-server once (npm, no install scripts)."""
        return str(install_pouchdb_server())

    def argv(self) -> list[str]:
        return [self.install(), "-o", HOST, "-p", str(self._port), "-d", str(self.data_dir),
                "-c", str(self.data_dir / "config.json"), "--no-color"]

    def ready(self) -> bool:
        status, _ = http("GET", self.url + "/", headers={"Accept": "application/json"}, timeout=2)
        return status == 200

    def after_start(self) -> None:
        if self.admin_works():
            return
        status, body = http("PUT", f"{self.url}/_config/admins/{urllib.parse.quote(self.user)}",
                            body=json.dumps(self.password).encode(),
                            headers={"Accept": "application/json",
                                     "Content-Type": "application/json"})
        if status != 200:
            raise ServiceError(f"cannot create CouchDB admin {self.user!r}: {status} {body!r}")


class RunningCouchDB(CouchDBAPI):
    """A CouchDB that runs already (``IMGPIPE_TEST_COUCHDB_URL``): used, never stopped."""

    implementation: ClassVar[str] = "CouchDB at IMGPIPE_TEST_COUCHDB_URL"
    restartable: ClassVar[bool] = False

    def __init__(self, url_with_credentials: str) -> None:
        parts = urllib.parse.urlsplit(url_with_credentials)
        if not parts.username or parts.password is None:
            raise ServiceError(f"{URL_SETTING} needs the admin in it: http://USER:PASSWORD@HOST:PORT")
        self.user = urllib.parse.unquote(parts.username)
        self.password = urllib.parse.unquote(parts.password)
        self._url = f"{parts.scheme}://{parts.hostname}:{parts.port or DEFAULT_PORT}"
        self.pid: int | None = None
        self.running = True

    @property
    def url(self) -> str:
        return self._url

    def start(self, timeout: float | None = None) -> RunningCouchDB:
        if not self.admin_works():
            raise ServiceError(f"{URL_SETTING}: {self.url} does not accept its admin")
        return self

    def stop(self, grace: float = 0, sig: int = 0) -> None:
        """Nothing: a CouchDB we did not start is left alone."""

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "env": self.env(), "pid": None}


def couchdb_choice(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """Which CouchDB the settings select: (``"url"``, URL), (``"release"``, DIR) or
    (``"pouchdb"``, why)."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(URL_SETTING):
        return "url", environ[URL_SETTING]
    release = environ.get(RELEASE_SETTING, "")
    if release:
        return "release", str(Path(release).resolve())
    return "pouchdb", (f"neither {RELEASE_SETTING} nor {URL_SETTING} is set: falling back to "
                       f"pouchdb-server, a stand-in for CouchDB's API, not Apache CouchDB")


def start_couchdb(state_dir: Path, port: str | int = "auto", *, die_with_parent: bool = False,
                  environ: dict[str, str] | None = None) -> CouchDBAPI:
    """The CouchDB the settings select, started under ``state_dir`` when it is ours
    (``port``: ``"auto"``, ``"default"`` or a number)."""
    how, where = couchdb_choice(environ)
    if how == "url":
        return RunningCouchDB(where).start()

    def pick() -> int:
        if isinstance(port, int):
            return port
        return DEFAULT_PORT if port == "default" else free_port()

    if how == "release":
        return start_on_free_ports(lambda: ApacheCouchDB(state_dir, pick(), release=Path(where)))
    if environ is None:  # chosen by the settings, not asked for
        print(f"imgpipe.testing: {where}", file=sys.stderr)
    return start_on_free_ports(
        lambda: PouchDBServer(state_dir, pick(), die_with_parent=die_with_parent))


def saved_couchdb(state_dir: Path, saved: dict[str, Any]) -> CouchDBAPI:
    """The CouchDB a ``server.json`` describes (written by :meth:`LocalServer.start`)."""
    env = saved["env"]
    if saved.get("release"):
        return ApacheCouchDB(state_dir, int(saved["ports"]["http"]), release=saved["release"],
                             user=env["COUCHDB_USER"], password=env["COUCHDB_PASSWORD"])
    if saved.get("ports"):
        return PouchDBServer(state_dir, int(saved["ports"]["http"]), user=env["COUCHDB_USER"],
                             password=env["COUCHDB_PASSWORD"])
    parts = urllib.parse.urlsplit(env["COUCHDB_URL"])
    user, password = (urllib.parse.quote(env[k], safe="") for k in ("COUCHDB_USER",
                                                                    "COUCHDB_PASSWORD"))
    return RunningCouchDB(f"{parts.scheme}://{user}:{password}@{parts.netloc}")
