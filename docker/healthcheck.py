#!/opt/imgpipe/bin/python
"""Container health check: GET the running imgpipe service's /readyz.

The service is read from the container's command line (``imgpipe runner`` ...),
its port from the same variable the service reads (``RUNNER_PORT`` ...) or a
``--port`` flag. ``IMGPIPE_HEALTH_URL`` overrides all of it. Exit 0 when ready.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

SERVICES = {
    "upload-server": ("UPLOAD", 8000),
    "imageproc": ("IMAGEPROC", 8080),
    "runner": ("RUNNER", 8001),
    "provenance": ("PROVENANCE", 8002),
}
ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]", "localhost"}


def _command_lines() -> list[list[str]]:
    lines = []
    for proc in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        lines.append([a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return lines


def _service_args() -> tuple[str, list[str]] | None:
    for args in _command_lines():
        for i, arg in enumerate(args[:-1]):
            if os.path.basename(arg) == "imgpipe" and args[i + 1] in SERVICES:
                return args[i + 1], args[i + 2 :]
    return None


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url() -> str:
    """The readiness URL of the service running in this container."""
    if url := os.environ.get("IMGPIPE_HEALTH_URL"):
        return url
    found = _service_args()
    if found is None:
        raise SystemExit("no imgpipe service is running in this container")
    service, args = found
    prefix, default_port = SERVICES[service]
    port = _flag(args, "--port") or os.environ.get(f"{prefix}_PORT") or str(default_port)
    host = _flag(args, "--host") or os.environ.get(f"{prefix}_HOST", "")
    if host in ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/readyz"


def main() -> int:
    url = health_url()
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("IMGPIPE_HEALTH_TIMEOUT", "3"))) as reply:
            return 0 if reply.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
