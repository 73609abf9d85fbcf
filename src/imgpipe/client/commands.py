"""The client's subcommands: ``imgpipe submit``, ``imgpipe ingest`` and ``imgpipe jobs``."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from rich.console import Console

DEFAULT_URL = "http://127.0.0.1:8000"


def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("IMGPIPE_URL") or DEFAULT_URL)


def _token(args: argparse.Namespace) -> str | None:
    return str(args.token or os.environ.get("IMGPIPE_TOKEN") or "") or None


def _submit(args: argparse.Namespace) -> int:
    from imgpipe.client.submit import submit

    console = Console(stderr=False)
    return asyncio.run(submit(
        args.paths, url=_url(args), pipeline=args.preset or args.pipeline, wait=args.wait,
        out=args.out, timeout=args.timeout, parallel=args.parallel, console=console,
        token=_token(args), glob=args.glob, again=args.again,
    ))


def _ingest(args: argparse.Namespace) -> int:
    from imgpipe.client.ingest import STOPPED, ingest

    pipelines = [p for p in (args.preset, *(args.pipeline or [])) if p]
    try:
        return asyncio.run(ingest(args.source, url=_url(args), pipelines=pipelines,
                                  restart=args.restart, console=Console(), token=_token(args)))
    except KeyboardInterrupt:
        print("stopped — run the same command again to resume")
        return STOPPED


def _jobs(args: argparse.Namespace) -> int:
    from imgpipe.client.show import show_jobs

    return asyncio.run(show_jobs(args.job_ids, url=_url(args), as_json=args.json,
                                 console=Console(), token=_token(args)))


def add_client_commands(sub: Any) -> None:
    """Register ``submit`` and ``jobs`` on the ``imgpipe`` command's subparsers."""
    url_help = f"the upload service (env IMGPIPE_URL, default {DEFAULT_URL})"
    token_help = "API token, when the service sets UPLOAD_API_TOKENS (better: env IMGPIPE_TOKEN)"
    submit = sub.add_parser(
        "submit", help="Upload images to imgpipe, optionally wait and download the outputs.",
        description="Upload images (directories recursively) with a progress bar per file; "
                    "with --wait or --out, wait for the jobs and print what they made. "
                    "A file already submitted with the same pipeline (same content, its job not "
                    "failed) is skipped and listed with that job, unless --again. "
                    "Exit status 1 if any file was refused or its job failed.",
    )
    submit.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image files or directories")
    choice = submit.add_mutually_exclusive_group()
    choice.add_argument("--preset", metavar="NAME", help="a named pipeline, e.g. thumbnail")
    choice.add_argument("--pipeline", metavar="TEXT",
                        help="a pipeline, e.g. 'resize:w=800/format:webp'")
    submit.add_argument("--glob", metavar="PATTERN",
                        help="under directories, only files matching PATTERN relative to the "
                             "directory, e.g. '**/*.tif' (default: every image, recursively)")
    submit.add_argument("--again", action="store_true",
                        help="upload every file, even those already submitted with this pipeline")
    submit.add_argument("--wait", action="store_true", help="wait until every job is finished")
    submit.add_argument("--out", type=Path, metavar="DIR",
                        help="download the outputs into DIR (implies --wait)")
    submit.add_argument("--url", help=url_help)
    submit.add_argument("--token", help=token_help)
    submit.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="how long --wait waits (default 600)")
    submit.add_argument("--parallel", type=int, default=4, choices=range(1, 33), metavar="N",
                        help="uploads at once (default 4)")
    submit.set_defaults(func=_submit)

    ingest = sub.add_parser(
        "ingest", help="Make jobs of images already in an S3 bucket, without uploading them.",
        description="Ask the upload service to ingest s3://BUCKET/PREFIX (a bucket listed in "
                    "its UPLOAD_INGEST_BUCKETS): each object is read once (sha256, size, format) "
                    "and becomes one job whose provenance names its location. Objects already "
                    "ingested are skipped; Ctrl-C stops, the same command resumes. Exit 0 when "
                    "done, 1 when some objects failed, 2 when refused, 130 when stopped.")
    ingest.add_argument("source", metavar="s3://BUCKET/PREFIX")
    ingest.add_argument("--preset", metavar="NAME", help="a named pipeline, e.g. thumbnail")
    ingest.add_argument("--pipeline", metavar="TEXT", action="append",
                        help="a pipeline (repeat for several); default: the service's default")
    ingest.add_argument("--restart", action="store_true",
                        help="list from the beginning instead of resuming a stopped run "
                             "(what was ingested is still skipped)")
    ingest.add_argument("--url", help=url_help)
    ingest.add_argument("--token", help=token_help)
    ingest.set_defaults(func=_ingest)

    jobs = sub.add_parser("jobs", help="Print jobs' status and outputs.",
                          description="Print each job's status, input and outputs. "
                                      "Exit status 1 if a job is unknown or failed.")
    jobs.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    jobs.add_argument("--url", help=url_help)
    jobs.add_argument("--token", help=token_help)
    jobs.add_argument("--json", action="store_true", help="print the job's JSON as the API gives it")
    jobs.set_defaults(func=_jobs)
