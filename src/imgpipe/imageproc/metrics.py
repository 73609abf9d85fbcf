"""Prometheus metrics of imageproc."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "imgpipe_imageproc_requests", "POST /process requests by outcome (ok or a reason)", ["outcome"]
)
DURATION = Histogram(
    "imgpipe_imageproc_processing_seconds",
    "Time libvips spent on one request, by output format",
    ["format"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WAIT = Histogram(
    "imgpipe_imageproc_queue_seconds",
    "Time a request waited for a worker",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("imgpipe_imageproc_in_flight", "Requests admitted (running or queued)")
INPUT_BYTES = Counter("imgpipe_imageproc_input_bytes", "Bytes of input images accepted")
OUTPUT_BYTES = Counter("imgpipe_imageproc_output_bytes", "Bytes of output images produced")
