"""The benchmarks in their smoke mode (tiny sizes), so the scripts never rot.

Each runs as its own process against the session's servers (``--external``)
and must finish and report; no timing or memory figure is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, out: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "bench" / script), "--smoke", "--external",
         "--out", str(out), *args],
        env=env, capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture
def bench_env(rabbitmq_url: str, s3_server: Any, couchdb_server: Any) -> dict[str, str]:
    return os.environ | {"AMQP_URL": rabbitmq_url} | s3_server.env() | couchdb_server.env()


@pytest.mark.timeout(300)
def test_pipeline_benchmark_runs_and_reports(bench_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    stdout = run_bench("pipeline.py", out, bench_env)
    report = json.loads(out.read_text())
    (config,) = report["summary"]["configs"].values()
    assert config["failed"] == 0
    assert config["images_per_s"] > 0 and config["ratio_to_in_process"] > 0
    assert set(config["peak_rss_mb"]) >= {"upload-server", "imageproc", "provenance", "runner-1"}
    assert config["paced"]["provenance_p50_ms"] > 0
    assert "images/s" in stdout and "ratio to in-process" in stdout


@pytest.mark.timeout(300)
def test_memory_benchmark_runs_and_reports(bench_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    stdout = run_bench("memory.py", out, bench_env)
    results = {r["case"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"upload", "thumbnail", "jobs"}
    assert results["upload"]["stored_bytes"] == 8 * 1024 * 1024
    assert results["upload"]["growth_mb"] >= 0
    assert {row["pipeline"] for row in results["thumbnail"]["rows"]} == {"thumbnail", "web"}
    assert results["jobs"]["failed"] == 0 and results["jobs"]["series"]
    assert "peak RSS" in stdout and "allocator" in stdout


def test_profile_report_reads_collapsed_stacks(tmp_path: Path) -> None:
    (tmp_path / "svc.txt").write_text("main (a.py:1);work (a.py:5) 3\nmain (a.py:1) 1\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile_report.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert "4 samples" in result.stdout and "75.0%  work (a.py:5)" in result.stdout
