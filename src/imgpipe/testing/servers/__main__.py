"""Start and stop the local servers imgpipe needs, for ``scripts/run`` and people.

    python -m imgpipe.testing.servers install|start|stop|status|env [--state-dir DIR] [--ports auto|default]

RabbitMQ: a broker answering on 127.0.0.1:5672 is used as it is, otherwise one of our
own. S3: SeaweedFS. CouchDB: as :mod:`imgpipe.testing.servers.couchdb` says (Apache
CouchDB from ``IMGPIPE_COUCHDB_RELEASE``, a running one from ``IMGPIPE_TEST_COUCHDB_URL``,
else pouchdb-server). Each server keeps its pid, log, data and ``server.json`` under
``DIR/<kind>`` (default ``.cache/services``); ``stop`` stops only what was started here.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imgpipe.testing.servers.base import ServiceError, read_json, write_json
from imgpipe.testing.servers.couchdb import (
    PouchDBServer,
    couchdb_choice,
    saved_couchdb,
    start_couchdb,
)
from imgpipe.testing.servers.rabbitmq import RabbitMQServer, ensure_rabbitmq
from imgpipe.testing.servers.seaweedfs import S3Server, find_weed

KINDS = ("rabbitmq", "s3", "couchdb")


def saved(state_dir: Path, kind: str) -> Any:
    """The server a ``DIR/<kind>/server.json`` describes, or None."""
    data = read_json(state_dir / kind / "server.json")
    if not data:
        return None
    if kind == "rabbitmq":
        return RabbitMQServer.from_saved(state_dir / kind, data)
    if kind == "s3":
        return S3Server.from_saved(state_dir / kind, data)
    return saved_couchdb(state_dir / kind, data)


def start(state_dir: Path, ports: str) -> None:
    for kind in KINDS:
        server = saved(state_dir, kind)
        if server is not None and server.running:
            print(f"{kind}: {server.url} (already running)")
            continue
        began = time.monotonic()
        if kind == "rabbitmq":
            server = ensure_rabbitmq(state_dir / kind, fallback_ports=ports)
        elif kind == "s3":
            server = S3Server(state_dir / kind, ports).start()
        else:
            server = start_couchdb(state_dir / kind, ports)
        (state_dir / kind).mkdir(parents=True, exist_ok=True)
        write_json(state_dir / kind / "server.json", server.describe())
        what = getattr(server, "implementation", "") or kind
        owner = "started" if getattr(server, "pid", None) else "already running"
        print(f"{kind}: {server.url} ({what}, {owner}, {time.monotonic() - began:.1f} s)")


def stop(state_dir: Path) -> None:
    for kind in KINDS:
        server = saved(state_dir, kind)
        if server is not None and server.running and (kind != "rabbitmq" or server.started):
            server.stop()
            print(f"{kind}: stopped")
        else:
            print(f"{kind}: not started here, left alone")


def status(state_dir: Path) -> int:
    up = 0
    for kind in KINDS:
        server = saved(state_dir, kind)
        running = server is not None and server.running
        up += running
        print(f"{kind}: {'running' if running else 'stopped'} {server.url if server else ''}")
    return 0 if up == len(KINDS) else 1


def env(state_dir: Path) -> None:
    for kind in KINDS:
        server = saved(state_dir, kind)
        for key, value in (server.env() if server else {}).items():
            print(f"export {key}={shlex.quote(value)}")


def install() -> None:
    print(f"weed: {find_weed()}")
    print(f"rabbitmq-server: {RabbitMQServer.install()}")
    how, where = couchdb_choice()
    if how == "pouchdb":
        print(f"pouchdb-server: {PouchDBServer.install()} ({where})")
    else:
        print(f"couchdb: {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgpipe.testing.servers",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "status", "env"])
    parser.add_argument("--state-dir", type=Path, default=Path(".cache/services"))
    parser.add_argument("--ports", choices=["auto", "default"], default="default")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    try:
        if args.command == "install":
            install()
        elif args.command == "start":
            start(state_dir, args.ports)
        elif args.command == "stop":
            stop(state_dir)
        elif args.command == "status":
            return status(state_dir)
        else:
            env(state_dir)
    except (ServiceError, subprocess.CalledProcessError) as error:
        print(f"servers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
