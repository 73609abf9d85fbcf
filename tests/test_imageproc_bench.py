"""The benchmark's smoke mode runs end to end (no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "imageproc.py"


def test_bench_smoke_mode_reports_every_case() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", "--requests", "2", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report = json.loads(done.stdout)
    assert [row["case"] for row in report["rows"]] == [
        "thumbnail-jpeg", "thumbnail-webp", "dither-png", "dither-colour"
    ]
    for row in report["rows"]:
        assert row["inprocess_per_s"] > 0 and row["http_per_s"] > 0 and row["output_bytes"] > 0
    assert report["service_peak_rss_mb"] > 0
