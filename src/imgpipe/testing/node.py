"""npm packages the tests need (pouchdb-server, the c2pa-ts reader), installed once.

Everything goes into one directory (``.cache/node`` of the checkout) with
``npm install --ignore-scripts``, under a file lock so parallel sessions install once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from imgpipe.testing.servers.base import ServiceError, apt_install, file_lock, write_json

NODE_DIR = Path(__file__).resolve().parents[3] / ".cache" / "node"
POUCHDB_SERVER = "pouchdb-server@4.2.0"
C2PA_TS = "@trustnxt/c2pa-ts@0.9.4"
"""A second C2PA reader, pure TypeScript (not c2pa-rs): tests validate outputs with it too."""


def npm_package(spec: str, provides: Path, node_dir: Path = NODE_DIR) -> Path:
    """Install the npm package ``spec`` into ``node_dir`` unless ``provides`` exists."""
    if provides.exists():
        return provides
    with file_lock(node_dir / ".install.lock"):
        if not provides.exists():
            if shutil.which("npm") is None:
                apt_install("nodejs", "npm")
            if not (node_dir / "package.json").exists():
                write_json(node_dir / "package.json",
                           {"name": "imgpipe-dev-servers", "private": True})
            subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
                            "--save-exact", "--loglevel=error", spec],
                           cwd=node_dir, check=True, stdout=subprocess.DEVNULL)
    if not provides.exists():
        raise ServiceError(f"npm install {spec} did not provide {provides}")
    return provides


def install_pouchdb_server() -> Path:
    """The ``pouchdb-server`` command."""
    return npm_package(POUCHDB_SERVER, NODE_DIR / "node_modules" / ".bin" / "pouchdb-server")


def install_c2pa_ts() -> Path:
    """The directory that holds ``node_modules/@trustnxt/c2pa-ts`` (run node there)."""
    npm_package(C2PA_TS, NODE_DIR / "node_modules" / "@trustnxt" / "c2pa-ts" / "package.json")
    return NODE_DIR
