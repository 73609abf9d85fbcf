"""Turning provenance events into CouchDB documents, once each.

A document keeps the event's fields (the indexes and the job view query
them) and, under ``prov``, the PROV-JSON records the event adds to its job's
record (:func:`imgpipe.domain.prov.event_fragment`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from imgpipe.broker.protocol import Delivery
from imgpipe.domain.events import ProvenanceEvent
from imgpipe.domain.prov import fragment_json
from imgpipe.errors import PermanentError
from imgpipe.provenance import metrics
from imgpipe.provstore.protocol import ProvenanceStore
from imgpipe.runtime.logs import job_context

log = logging.getLogger(__name__)

DOC_TYPE = "imgpipe.provenance"
SCHEMA_VERSION = 2


def to_document(event: ProvenanceEvent) -> dict[str, Any]:
    """The CouchDB document of ``event`` (stored under ``event.event_id``)."""
    doc = event.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["type"] = DOC_TYPE
    doc["schema_version"] = SCHEMA_VERSION
    doc["prov"] = fragment_json(event)
    return doc


@dataclass
class Recorder:
    store: ProvenanceStore

    async def handle(self, delivery: Delivery) -> None:
        try:
            event = ProvenanceEvent.model_validate_json(delivery.body)
        except ValidationError as exc:
            raise PermanentError(
                f"not an imgpipe provenance event: {exc.error_count()} errors",
                reason="invalid_message",
            ) from exc
        with job_context(event.job_id):
            created = await self.store.put(event.event_id, to_document(event))
            metrics.RECORDS.labels(kind=event.kind, outcome="stored" if created else "duplicate").inc()
            log.info("provenance stored" if created else "provenance already stored",
                     extra={"kind": event.kind, "doc_id": event.event_id})
