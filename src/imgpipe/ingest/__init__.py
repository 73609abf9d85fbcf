"""Ingest: jobs for images already in object storage, without uploading them again.

``imgpipe ingest s3://bucket/prefix`` (and ``POST /ingest`` behind it) lists
the prefix a page at a time, reads each object once to record its sha256,
size and format, and queues one job per image whose provenance names the
object's own location. A ledger beside the inputs makes a re-run skip what
was already ingested (same key, same content) and an interrupted run resume
where it stopped. Only buckets the deployment allows (``UPLOAD_INGEST_BUCKETS``)
can be ingested.
"""
