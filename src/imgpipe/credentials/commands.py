"""`imgpipe credentials init DIR` and `imgpipe verify --file FILE`.

``verify --file`` needs no server: it validates the file's Content
Credentials (signatures, hash binding, trust against ``--anchors`` or
``C2PA_TRUST_ANCHORS``) and prints the chain of manifests with their actions
and ingredients. Exit status: 0 when every file is ``trusted``; 1 when one is
``invalid``, ``untrusted`` (C2PA's ``Valid`` with
``signingCredential.untrusted``) or carries no credentials; 2 for a bad
setting or an unreadable file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imgpipe.errors import ConfigError


def add_credentials_command(sub: Any) -> None:
    """Register ``imgpipe credentials init``."""
    creds = sub.add_parser("credentials", help="Content Credentials (C2PA) signing keys.",
                           description="Make certificate chains for signing outputs.")
    actions = creds.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="Make a trial CA and signing certificate under DIR.",
        description="Write ca.pem, chain.pem and signer-key.pem under DIR: a CA and a signing "
                    "certificate named as trial (not for production). Point C2PA_CERT_CHAIN, "
                    "C2PA_PRIVATE_KEY and C2PA_TRUST_ANCHORS at them.")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--alg", choices=("ed25519", "es256"), default="ed25519")
    init.add_argument("--purpose", default="trial",
                      help="word put in the certificates' names (default: trial)")
    init.add_argument("--force", action="store_true", help="replace a chain already in DIR")
    init.set_defaults(func=init_command)


def add_file_option(verify: argparse.ArgumentParser) -> None:
    """``imgpipe verify --file FILE [--anchors PEM]``: check a file with no server."""
    verify.add_argument("--file", type=Path, action="append", default=None, metavar="FILE",
                        help="validate FILE's Content Credentials instead of a job (repeatable)")
    verify.add_argument("--anchors", type=Path, default=None, metavar="PEM",
                        help="CA certificates to trust for --file (env C2PA_TRUST_ANCHORS)")


def init_command(args: argparse.Namespace) -> int:
    from imgpipe.credentials.chain import ChainFiles, make_chain

    files = ChainFiles.under(args.directory)
    if files.exist() and not args.force:
        raise ConfigError(f"{args.directory} already holds a chain (use --force to replace it)")
    made = make_chain(args.directory, kind=args.alg, purpose=args.purpose)
    print(f"made a {args.purpose} certificate chain ({args.alg}), not for production:\n"
          f"  C2PA_SIGN=on\n  C2PA_ALG={args.alg}\n"
          f"  C2PA_CERT_CHAIN={made.chain}\n  C2PA_PRIVATE_KEY={made.key}\n"
          f"  C2PA_TRUST_ANCHORS={made.ca}   (for readers: imgpipe verify --file, upload)")
    return 0


def verify_files_command(args: argparse.Namespace) -> int:
    from imgpipe.credentials.reading import inspect
    from imgpipe.credentials.signing import read_pem, trust_anchors
    from imgpipe.runtime.config import TrustSettings, load

    anchors = (read_pem(args.anchors, "--anchors") if args.anchors
               else trust_anchors(load(TrustSettings)))
    status = 0
    reports = []
    for path in args.file:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"imgpipe verify: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 2
        found = inspect(data, None, anchors)
        status = status or (0 if found.verdict == "trusted" else 1)
        reports.append({"file": str(path), **found.to_dict()})
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    else:
        print("\n\n".join(render(r, anchors is not None) for r in reports))
    return status


_MARKS = {"trusted": "trusted", "untrusted": "NOT trusted (signature valid, signer not anchored)",
          "invalid": "INVALID", "none": "no Content Credentials"}


def render(report: dict[str, Any], anchored: bool = True) -> str:
    """One file's validation for people: verdict, failures, then the chain of manifests."""
    lines = [f"{report['file']}: {_MARKS[report['verdict']]}"]
    if report["verdict"] == "untrusted" and not anchored:
        lines.append("  (no trust anchors given: set C2PA_TRUST_ANCHORS or --anchors)")
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    for failure in report["failures"]:
        lines.append(f"  ✗ {failure['code']}: {failure['explanation']}")
    for depth, manifest in enumerate(report["manifests"]):
        pad = "  " + "   " * depth
        lines.append(f"{pad}{'└─ ' if depth else ''}{manifest['title']}  signed by "
                     f"{manifest['signer']} ({manifest['issuer']}, {manifest['algorithm']})")
        for action in manifest["actions"]:
            what = f" {action['description']}" if action.get("description") else ""
            lines.append(f"{pad}   · {action['action']}{what}")
        for ingredient in manifest["ingredients"]:
            lines.append(f"{pad}   ◦ {ingredient['relationship']} {ingredient['title']} "
                         f"{ingredient.get('instance_id') or ''}".rstrip())
        step = manifest.get("imgpipe")
        if step:
            where = (step.get("record") or {}).get("url") or (step.get("record") or {}).get(
                "bundle", "")
            lines.append(f"{pad}   imgpipe: job {step.get('job_id', '-')} stage "
                         f"{step.get('stage', '-')} · {step.get('pipeline')} · record {where}")
    return "\n".join(lines)
