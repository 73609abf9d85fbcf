"""`imgpipe presets check FILE` and `imgpipe presets list`: the presets file for people.

``check`` reads a presets file exactly as the services do at start, so a file
it accepts starts every service, and one it refuses names the bad entry.
Exit status: 0 valid, 1 invalid (the message names the file and the entry).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    presets = sub.add_parser(
        "presets", help="Check or list named pipelines (the IMGPIPE_PRESETS file).",
        description="Named pipelines: the built-in ones and those of the presets file "
                    "(IMGPIPE_PRESETS) that upload, runner, imageproc and the page read.")
    actions = presets.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="Validate a presets file as the services would at start.",
        description="Validate a presets file (TOML or JSON). Exit 0 when every entry is a "
                    "valid pipeline, 1 naming the first bad entry otherwise.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_command)
    listing = actions.add_parser(
        "list", help="Print every preset: built-in ones and those of IMGPIPE_PRESETS.",
        description="Print every preset with its canonical pipeline and description.")
    listing.add_argument("--file", metavar="FILE", default=None,
                         help="a presets file (default: env IMGPIPE_PRESETS)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_command)


def check_command(args: argparse.Namespace) -> int:
    from imgpipe.domain.pipeline import PresetError, read_presets

    try:
        presets = read_presets(args.file)
    except PresetError as exc:
        print(f"imgpipe presets: {exc.message}", file=sys.stderr)
        return 1
    if not presets:
        print(f"imgpipe presets: {args.file}: no presets in it", file=sys.stderr)
        return 1
    print(f"{args.file}: {len(presets)} preset(s) valid: {', '.join(presets)}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    from imgpipe.domain.pipeline import PresetError, all_presets, read_presets

    try:
        table = all_presets(read_presets(args.file or os.environ.get("IMGPIPE_PRESETS")))
    except PresetError as exc:
        print(f"imgpipe presets: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([p.to_json() for p in table.values()], indent=2))
        return 0
    width = max(len(name) for name in table)
    for preset in table.values():
        origin = "" if preset.builtin else "  (presets file)"
        print(f"{preset.name:<{width}}  {preset.pipeline}{origin}")
        if preset.description:
            print(f"{'':<{width}}  {preset.description}")
    return 0
