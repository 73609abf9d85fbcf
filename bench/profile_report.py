"""Summarise py-spy raw (collapsed) stacks: where each service spends its samples.

    .venv/bin/python bench/profile_report.py DIR [--top 25]

For every ``*.txt`` written by ``bench/pipeline.py --profile DIR`` it prints the
functions with the most samples inclusive (on the stack) and self (on top).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"== {path.parent.name}/{path.stem}: {total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        for frame, n in table.most_common(top):
            lines.append(f"{100 * n / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in sorted(args.folder.rglob("*.txt")):
        print(summarize(path, args.top), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
