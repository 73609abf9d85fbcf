"""bench/dev.py's smoke mode runs end to end (no timings asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from imgpipe.testing.servers.base import free_port

BENCH = Path(__file__).resolve().parent.parent / "bench" / "dev.py"


def test_bench_smoke_mode_reports_every_part() -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--port", str(port)],
        capture_output=True, text=True, timeout=240, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "S3_", "COUCHDB_"))},
    )
    report = json.loads(done.stdout)
    assert report["broker"]["publish_per_s"] > 0 and report["broker"]["consume_ack_per_s"] > 0
    assert report["objects"]["put_256k_per_s"] > 0 and report["provenance"]["put_per_s"] > 0
    assert report["dev"]["jobs"] == 10 and report["dev"]["restart_pending_jobs"] == 10
