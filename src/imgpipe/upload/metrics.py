"""Prometheus metrics of the upload service."""

from prometheus_client import Counter

UPLOADS = Counter("imgpipe_upload_files", "Images accepted for processing", ["format"])
UPLOAD_BYTES = Counter("imgpipe_upload_bytes", "Bytes of accepted images")
