"""The `imgpipe` command: parses arguments, builds settings, runs a service.

Each subcommand reads its settings from the environment (the seed's variable
names) with command-line flags taking precedence, sets up structured logging
and hands over to the service's ``run_*`` function.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from imgpipe import __version__
from imgpipe.commands import dev
from imgpipe.errors import ConfigError
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.provenance.commands import add_commands as add_provenance_commands
from imgpipe.provenance.settings import ProvenanceSettings
from imgpipe.runner.settings import RunnerSettings
from imgpipe.runtime.config import load
from imgpipe.runtime.logs import register_secrets, secrets_of, setup_logging
from imgpipe.upload.settings import UploadSettings

Command = Callable[[argparse.Namespace], int]


def _run(service: str, settings: Any, main: Coroutine[Any, Any, None]) -> int:
    register_secrets(secrets_of(settings))
    setup_logging(service, settings.log_level, settings.log_format)
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        pass
    return 0


def _upload(args: argparse.Namespace) -> int:
    settings = load(UploadSettings, upload_host=args.host, upload_port=args.port)
    from imgpipe.upload.service import run_upload

    return _run("upload", settings, run_upload(settings))


def _imageproc(args: argparse.Namespace) -> int:
    settings = load(ImageprocSettings, imageproc_host=args.host, imageproc_port=args.port)
    from imgpipe.imageproc import run_imageproc

    return _run("imageproc", settings, run_imageproc(settings))


def _runner(args: argparse.Namespace) -> int:
    settings = load(RunnerSettings, runner_host=args.host, runner_port=args.port,
                    runner_pipeline=args.pipeline)
    from imgpipe.runner.service import run_runner

    return _run("runner", settings, run_runner(settings))


def _provenance(args: argparse.Namespace) -> int:
    settings = load(ProvenanceSettings, provenance_host=args.host, provenance_port=args.port)
    from imgpipe.provenance.service import run_provenance

    return _run("provenance", settings, run_provenance(settings))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgpipe",
        description="Image processing pipeline with a provenance record you can verify.",
    )
    parser.add_argument("--version", action="version", version=f"imgpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def http(name: str, func: Command, help_: str, host_var: str, port_var: str,
             port: int) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--host", default=None,
                       help=f"address to listen on (env {host_var}, default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None,
                       help=f"port to listen on (env {port_var}, default {port})")
        p.set_defaults(func=func)
        return p

    http("upload-server", _upload, "Serve the upload API and job status (HTTP).",
         "UPLOAD_HOST", "UPLOAD_PORT", 8000)
    http("imageproc", _imageproc, "Serve image processing with libvips (HTTP).",
         "IMAGEPROC_HOST", "IMAGEPROC_PORT", 8080)
    runner = http("runner", _runner,
                  "Process images from AMQP_EXCHANGE_SUBSCRIBE, publish to AMQP_EXCHANGE_PUBLISH.",
                  "RUNNER_HOST", "RUNNER_PORT", 8001)
    runner.add_argument("--pipeline", default=None,
                        help="this stage's pipeline (env RUNNER_PIPELINE; default: each event's own)")
    provenance = http("provenance", _provenance,
                      "Store provenance events in CouchDB (or show, with an action).",
                      "PROVENANCE_HOST", "PROVENANCE_PORT", 8002)
    add_provenance_commands(sub, provenance)
    dev.add_command(sub)
    from imgpipe.client.commands import add_client_commands
    from imgpipe.credentials.commands import add_credentials_command

    add_credentials_command(sub)

    add_client_commands(sub)
    from imgpipe.commands import dlq, presets, queues

    dlq.add_parser(sub)
    presets.add_parser(sub)
    queues.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"imgpipe {args.command}: {err.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
