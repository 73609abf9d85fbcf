"""Prometheus metrics of the upload service."""

from prometheus_client import Counter

UPLOADS = Counter("imgpipe_upload_files", "Images accepted for processing", ["format"])
UPLOAD_BYTES = Counter("imgpipe_upload_bytes", "Bytes of accepted images")
LIMITED = Counter("imgpipe_upload_limited", "Requests refused by a cost limit", ["limit"])
RERUNS_CACHED = Counter("imgpipe_upload_verify_reruns_cached",
                        "Verification re-runs answered from the cache of recent re-runs")
