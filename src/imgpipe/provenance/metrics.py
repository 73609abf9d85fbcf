"""Prometheus metrics of the provenance service."""

from prometheus_client import Counter

RECORDS = Counter("imgpipe_provenance_records", "Provenance events handled", ["kind", "outcome"])
