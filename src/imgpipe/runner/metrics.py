"""Prometheus metrics of the runner."""

from prometheus_client import Counter, Histogram

JOBS = Counter("imgpipe_runner_jobs", "Images processed by outcome", ["outcome"])
DURATION = Histogram(
    "imgpipe_runner_processing_seconds", "Time from taking an event to its output stored",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
