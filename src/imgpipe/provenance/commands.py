"""`imgpipe provenance show|lineage` and `imgpipe verify`: the record for people.

These commands read the provenance database and the object store directly
(same settings as the services: ``COUCHDB_*``, ``S3_*``, ``IMAGEPROC_URL``),
so they need no running upload service.

``imgpipe verify --url URL`` asks a running upload service instead (for
deployments where imageproc is internal).

Exit status: 0 when the record was shown or the job verified, 1 when
verification found a difference, 3 when there is no such record or no
verdict could be given (a backend unreachable), 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from imgpipe.credentials.commands import add_file_option, verify_files_command
from imgpipe.errors import ConfigError

if TYPE_CHECKING:
    from imgpipe.provstore.protocol import ProvenanceStore

T = TypeVar("T")

NOT_FOUND = 3


def add_commands(sub: Any, provenance: argparse.ArgumentParser) -> None:
    """Add ``show`` and ``lineage`` under ``imgpipe provenance``, and ``imgpipe verify``."""
    actions = provenance.add_subparsers(
        dest="action", metavar="[ACTION]",
        description="Without an action, `imgpipe provenance` runs the provenance service.",
    )
    show = actions.add_parser("show", help="Print a job's provenance as a tree (or PROV).",
                              description="Print a job's provenance record.")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--format", choices=("tree", "json", "provn", "jsonld", "dot"),
                      default="tree",
                      help="tree (default, for people), PROV-JSON, PROV-N, PROV-JSON-LD, or dot "
                           "(Graphviz: imgpipe provenance show JOB --format dot | dot -Tsvg)")
    show.set_defaults(func=show_command)
    lin = actions.add_parser("lineage", help="Print what an image was made from and into.",
                             description="Print an image's lineage across stages and jobs.")
    lin.add_argument("sha256", metavar="SHA256")
    lin.add_argument("--format", choices=("summary", "json", "provn", "jsonld", "dot"),
                     default="summary",
                     help="summary (default), the records as PROV-JSON, PROV-N, PROV-JSON-LD, "
                          "or the lineage graph as dot (Graphviz)")
    lin.set_defaults(func=lineage_command)
    verify = sub.add_parser(
        "verify", help="Re-run a job's recorded steps and compare hashes.",
        description="Fetch the recorded input, re-run the recorded pipeline through imageproc "
                    "and compare the output's sha256 with the record. Exit 0 when verified, "
                    "1 when not, 3 when the job has no record. Signed outputs are compared by "
                    "their libvips payload, and their Content Credentials with the record. "
                    "With --file, validate files' Content Credentials instead (no server): "
                    "exit 0 when all are trusted, 1 when one is invalid, untrusted or unsigned.")
    verify.add_argument("job_id", metavar="JOB_ID", nargs="?")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    add_file_option(verify)
    verify.add_argument("--url", default=None,
                        help="ask the upload service at URL (e.g. http://localhost:8000) to verify, "
                             "instead of reading CouchDB and S3 and calling imageproc here")
    verify.add_argument("--token", default=None,
                        help="API token for --url (env IMGPIPE_TOKEN)")
    verify.set_defaults(func=verify_command)


def _settings() -> Any:
    from imgpipe.provenance.settings import VerifySettings
    from imgpipe.runtime.config import load
    from imgpipe.runtime.logs import setup_logging

    settings = load(VerifySettings)
    setup_logging("imgpipe", "warning", "text")
    return settings


def show_command(args: argparse.Namespace) -> int:
    settings = _settings()
    return asyncio.run(_show(settings, args.job_id, args.format))


def lineage_command(args: argparse.Namespace) -> int:
    settings = _settings()
    return asyncio.run(_lineage(settings, args.sha256, args.format))


def verify_command(args: argparse.Namespace) -> int:
    if args.file:
        if args.job_id or args.url:
            raise ConfigError("give a JOB_ID or --file, not both")
        return verify_files_command(args)
    if not args.job_id:
        raise ConfigError("give a JOB_ID to verify, or --file FILE")
    if args.url:
        token = args.token or os.environ.get("IMGPIPE_TOKEN") or None
        return asyncio.run(_verify_api(args.url, args.job_id, token, args.json))
    settings = _settings()
    return asyncio.run(_verify(settings, args.job_id, args.json))


async def _read_record(settings: Any, read: Callable[[ProvenanceStore], Awaitable[T]]) -> T | None:
    """``read`` on the provenance database; None (said on stderr) when it cannot be read."""
    from imgpipe.errors import ImgpipeError
    from imgpipe.provstore.open import open_provenance_store

    try:
        store = await open_provenance_store(settings)
        try:
            return await read(store)
        finally:
            await store.close()
    except ImgpipeError as err:
        print(f"imgpipe: {err.message}", file=sys.stderr)
        return None


async def _show(settings: Any, job_id: str, fmt: str) -> int:
    from imgpipe.domain.lineage import job_records
    from imgpipe.domain.prov import job_document, serialize

    docs = await _read_record(settings, lambda store: job_records(store, job_id))
    if docs is None:
        return NOT_FOUND
    if not docs:
        print(f"imgpipe: no provenance is recorded for job {job_id}", file=sys.stderr)
        return NOT_FOUND
    if fmt == "tree":
        print(render_tree(job_id, docs))
    elif fmt == "dot":
        from imgpipe.domain.graph import graph_of, to_dot

        print(to_dot(graph_of(docs), f"imgpipe job {job_id}"), end="")
    else:
        print(serialize(job_document(job_id, docs), fmt))
    return 0


async def _lineage(settings: Any, sha256: str, fmt: str) -> int:
    from imgpipe.domain.lineage import lineage
    from imgpipe.domain.prov import jobs_document, serialize

    found = await _read_record(settings, lambda store: lineage(store, sha256))
    if found is None:
        return NOT_FOUND
    if fmt == "summary":
        print(render_lineage(found.to_dict()))
    elif fmt == "dot":
        from imgpipe.domain.graph import graph_of, to_dot

        print(to_dot(graph_of(found.records.values()), f"lineage of sha256:{sha256}"), end="")
    else:
        print(serialize(jobs_document(found.records.values()), fmt))
    return 0


async def _verify(settings: Any, job_id: str, as_json: bool) -> int:
    from imgpipe.client.imageproc import ImageprocClient
    from imgpipe.credentials.agreement import RecordCheck
    from imgpipe.credentials.signing import trust_anchors
    from imgpipe.domain.verify import verify_job
    from imgpipe.errors import ImgpipeError
    from imgpipe.provstore.open import new_provenance_store
    from imgpipe.storage.open import new_object_store

    provenance = new_provenance_store(settings)
    objects = new_object_store(settings)
    imageproc = ImageprocClient(settings.imageproc_url, timeout=settings.imageproc_client_timeout)
    try:
        report = await verify_job(job_id, provenance, objects, imageproc,
                                  RecordCheck(trust_anchors(settings)))
    except ImgpipeError as err:
        print(f"imgpipe: no verdict: {err.message}", file=sys.stderr)
        return NOT_FOUND
    finally:
        await imageproc.close()
        await objects.close()
        await provenance.close()
    if report is None:
        print(f"imgpipe: no provenance is recorded for job {job_id}", file=sys.stderr)
        return NOT_FOUND
    return _print_report(report.to_dict(), as_json)


def _print_report(body: Mapping[str, Any], as_json: bool) -> int:
    print(json.dumps(body, indent=2) if as_json else render_report(body))
    return 0 if body.get("verified") else 1


async def _verify_api(url: str, job_id: str, token: str | None, as_json: bool) -> int:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession(headers=headers) as session, session.post(
            f"{url.rstrip('/')}/jobs/{job_id}/verify"
        ) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, ValueError, TimeoutError) as exc:
        print(f"imgpipe: no verdict: {url} did not answer ({type(exc).__name__})", file=sys.stderr)
        return NOT_FOUND
    if resp.status != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        print(f"imgpipe: {error.get('message') or f'{url} answered {resp.status}'}",
              file=sys.stderr)
        return NOT_FOUND if resp.status in (404, 503) else 2
    return _print_report(body, as_json)


def _short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "?"


def _image_line(image: Mapping[str, Any]) -> str:
    size = f"{image['width']}x{image['height']}" if image.get("width") else ""
    parts = [f"sha256:{_short(image.get('sha256'))}", image.get("media_type") or "", size,
             f"{image['size']} B" if image.get("size") is not None else "",
             ", ".join(image.get("locations") or [])]
    return "  ".join(p for p in parts if p)


def _step_line(step: Mapping[str, Any]) -> str:
    parts = [f"{step['stage']}: {step['pipeline']}", step["outcome"]]
    if step.get("libvips"):
        parts.append(f"libvips {step['libvips']}")
    if step.get("error"):
        parts.append(f"{step['error'].get('reason')}: {step['error'].get('message')}")
    if step.get("ended_at"):
        parts.append(f"at {step['ended_at']}")
    return " · ".join(parts)


def render_tree(job_id: str, docs: list[dict[str, Any]]) -> str:
    """A job's record as a tree: each image, and under it the steps that used it."""
    from imgpipe.domain.lineage import images, steps, uploads

    known = images(docs)
    step_list = steps(docs)
    received = uploads(docs)
    lines = [f"job {job_id}"]
    root: str | None = step_list[0]["input_sha256"] if step_list else None
    if received:
        upload = received[0]
        lines.append(f"  uploaded {upload.get('filename') or '(no name)'} "
                     f"at {upload.get('received_at')}")
        root = upload.get("sha256")

    def branch(sha: str | None, indent: str, seen: set[str]) -> None:
        lines.append(f"{indent}● {_image_line(known.get(sha or '', {'sha256': sha}))}")
        if not sha or sha in seen:
            return
        children = [s for s in step_list if s["input_sha256"] == sha]
        for i, step in enumerate(children):
            last = i == len(children) - 1
            lines.append(f"{indent}{'└─' if last else '├─'} {_step_line(step)}")
            if step.get("output_sha256"):
                branch(step["output_sha256"], indent + ("   " if last else "│  "), seen | {sha})

    branch(root, "  ", set())
    return "\n".join(lines)


def render_lineage(found: Mapping[str, Any]) -> str:
    """The summary of ``GET /lineage/{sha256}`` for people."""
    lines = [f"lineage of sha256:{found['sha256']}"]
    for entity in found["entities"]:
        lines.append(f"  {entity['relation']:<10} {_image_line(entity)}")
    for step in found["steps"]:
        lines.append(f"  step       {_short(step['input_sha256'])} -> "
                     f"{_short(step['output_sha256'])}  job {step['job_id']}  {_step_line(step)}")
    for upload in found["uploads"]:
        lines.append(f"  upload     {_short(upload['sha256'])}  job {upload['job_id']}  "
                     f"{upload.get('filename') or ''}")
    if found.get("truncated"):
        lines.append("  (truncated: more records exist)")
    return "\n".join(lines)


def render_report(report: Mapping[str, Any]) -> str:
    """A verification report for people."""
    mark = "verified" if report["verified"] else f"NOT verified: {report['outcome']}"
    lines = [f"job {report['job_id']}: {mark}"]
    for step in report["steps"]:
        lines.append(f"  {step['outcome']:<17} {step['stage']}: {step['pipeline']}")
        lines.append(f"  {'':<17} {step['message']}")
        creds = step.get("credentials")
        if creds:
            agree = "agree with" if creds["agrees"] else "DISAGREE with"
            lines.append(f"  {'':<17} Content Credentials {creds['verdict']}, signed by "
                         f"{creds.get('signer')}: {agree} the record")
        engine = step.get("libvips") or {}
        if engine.get("recorded") or engine.get("current"):
            lines.append(f"  {'':<17} libvips recorded {engine.get('recorded')}, "
                         f"now {engine.get('current')}")
    return "\n".join(lines)
