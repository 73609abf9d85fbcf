"""Wire models: round trips, deterministic ids, refusal of foreign messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imgpipe.domain.events import (
    ImageEvent,
    ObjectRef,
    ProvenanceEvent,
    new_id,
    provenance_event_id,
)

REF = ObjectRef(bucket="b", key="uploads/x", sha256="a" * 64, size=10, media_type="image/png")


def test_image_event_round_trip() -> None:
    event = ImageEvent(kind="uploaded", job_id=new_id(), stage="upload", image=REF,
                       pipelines=("resize:w=10",), filename="cat.png")
    data = event.to_bytes()
    assert b'"schema":"imgpipe.image-event/1"' in data
    assert ImageEvent.model_validate_json(data) == event


def test_provenance_ids_are_deterministic() -> None:
    job = new_id()
    a = provenance_event_id(job, "processed", "step.completed", "resize:w=10")
    assert a == provenance_event_id(job, "processed", "step.completed", "resize:w=10")
    assert a != provenance_event_id(job, "processed", "step.completed", "resize:w=11")
    assert a != provenance_event_id(job, "processed", "step.failed", "resize:w=10")


def test_foreign_messages_are_refused() -> None:
    with pytest.raises(ValidationError):
        ImageEvent.model_validate_json(b'{"schema":"something-else/9","kind":"uploaded"}')
    with pytest.raises(ValidationError):
        ProvenanceEvent.model_validate_json(b"not json")


def test_sha256_must_be_a_hex_digest() -> None:
    with pytest.raises(ValidationError):
        ObjectRef(bucket="b", key="k", sha256="xyz", size=1, media_type="image/png")
