"""The PROV model: fragments per event, a job's bundle, valid PROV-JSON and PROV-N."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import prov
import pytest
from prov.model import ProvDocument

from imgpipe.domain import prov as provmodel
from imgpipe.domain.events import ProvenanceEvent
from imgpipe.provenance.recorder import SCHEMA_VERSION, to_document
from tests.prov_events import chain, ref, sha, step

SCHEMA = json.loads((Path(prov.__file__).parent / "tests" / "schemas" / "prov-json.schema.json")
                    .read_text())


def docs_of(events: list[ProvenanceEvent]) -> list[dict[str, Any]]:
    return [to_document(e) | {"_id": e.event_id} for e in events]


def assert_valid(document: ProvDocument) -> None:
    """Valid PROV-JSON (schema), reads back equal, and PROV-N parses back (strict grammar)."""
    text = provmodel.serialize(document, "json")
    jsonschema.validators.validator_for(SCHEMA)(SCHEMA).validate(json.loads(text))
    assert ProvDocument.deserialize(content=text, format="json") == document
    provn = provmodel.serialize(document, "provn")
    assert ProvDocument.deserialize(content=provn, format="provn", profile="strict") == document
    assert json.loads(provmodel.serialize(document, "jsonld"))


def records(document: ProvDocument, kind: str) -> list[Any]:
    [bundle] = document.bundles
    return [r for r in bundle.get_records() if r.get_type().localpart == kind]


def test_stored_document_keeps_event_fields_and_its_prov_fragment() -> None:
    _, events = chain()
    doc = to_document(events[2])
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["kind"] == "step.completed" and doc["output"]["sha256"]
    fragment = ProvDocument.deserialize(content=json.dumps(doc["prov"]))
    jsonschema.validate(doc["prov"], SCHEMA)
    kinds = sorted(r.get_type().localpart for r in fragment.get_records())
    assert kinds == sorted(["Activity", "Agent", "Agent", "Association", "Association", "Entity",
                            "Entity", "Usage", "Generation", "Derivation", "Attribution"])


def test_job_bundle_links_upload_and_chained_stages() -> None:
    job_id, events = chain()
    document = provmodel.job_document(job_id, docs_of(events))
    assert_valid(document)
    [bundle] = document.bundles
    assert bundle.identifier == provmodel.bundle_id(job_id)
    original, thumb, dithered = (sha(f"{job_id}-{n}") for n in ("original", "thumb", "dithered"))
    derived = {(str(r.get_attribute("prov:generatedEntity").pop().localpart),
                str(r.get_attribute("prov:usedEntity").pop().localpart))
               for r in records(document, "Derivation")}
    assert derived == {(thumb, original), (dithered, thumb)}
    entities = {r.identifier.localpart: r for r in records(document, "Entity")}
    assert set(entities) == {original, thumb, dithered}
    assert entities[thumb].get_attribute("prov:location") == {f"s3://out/objects/{job_id}-thumb"}
    activities = {r.identifier.localpart for r in records(document, "Activity")}
    assert activities == {f"{job_id}.upload", provmodel.step_id(job_id, "thumbnailed",
                          "resize:w=256,h=256/format:png", original).localpart,
                          provmodel.step_id(job_id, "dithered", "dither/format:png", thumb).localpart}
    agents = {r.identifier.localpart for r in records(document, "Agent")}
    assert agents == {"imgpipe-upload-0.1.0", "imgpipe-runner-0.1.0", "libvips-8.18.7", "127.0.0.1"}
    assert len(records(document, "Attribution")) == 3  # upload to its client, outputs to the runner


def test_step_activity_records_pipeline_operations_and_times() -> None:
    job_id, events = chain()
    document = provmodel.job_document(job_id, docs_of(events))
    [activity] = [r for r in records(document, "Activity")
                  if r.identifier == provmodel.step_id(job_id, "dithered", "dither/format:png",
                                                       sha(f"{job_id}-thumb"))]
    assert activity.get_attribute("imgpipe:pipeline") == {"dither/format:png"}
    [operations] = activity.get_attribute("imgpipe:operations")
    assert json.loads(operations) == [{"op": "dither"}, {"op": "format", "format": "png"}]
    assert activity.get_startTime() < activity.get_endTime()
    instances = {v for r in records(document, "Association")
                 for v in r.get_attribute("imgpipe:instance")}
    assert instances == {"host-a:101", "127.0.0.1:8080"}


def test_redelivered_events_add_nothing() -> None:
    job_id, events = chain()
    once = provmodel.job_document(job_id, docs_of(events))
    twice = provmodel.job_document(job_id, docs_of(events + events[::-1]))
    assert twice == once


def test_failed_attempt_then_completion_is_one_activity() -> None:
    job_id, events = chain()
    source, target = ref(f"{job_id}-original", bucket="in"), ref(f"{job_id}-retry")
    events += step(job_id, "retried", "format:png", source, None, at=5, failed=True)
    events += step(job_id, "retried", "format:png", source, target, at=7, attempt=2)[1:]
    document = provmodel.job_document(job_id, docs_of(events))
    assert_valid(document)
    activity_id = provmodel.step_id(job_id, "retried", "format:png", source.sha256)
    assert len([r for r in records(document, "Activity") if r.identifier == activity_id]) == 1
    [ended] = records(document, "End")
    assert ended.get_attribute("imgpipe:reason") == {"bad_image"}


def test_records_without_a_stored_fragment_are_built_from_their_fields() -> None:
    job_id, events = chain()
    stored = docs_of(events)
    legacy = [{k: v for k, v in d.items() if k != "prov"} | {"schema_version": 1} for d in stored]
    assert provmodel.job_document(job_id, legacy) == provmodel.job_document(job_id, stored)


def test_several_jobs_are_one_bundle_each() -> None:
    first, a = chain()
    second, b = chain()
    document = provmodel.jobs_document(docs_of(a + b))
    assert_valid(document)
    assert {bundle.identifier.localpart for bundle in document.bundles} == {first, second}


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown PROV format"):
        provmodel.serialize(ProvDocument(), "turtle")


def test_records_that_disagree_are_all_shown() -> None:
    job_id, events = chain()
    docs = docs_of(events)
    edited = dict(docs[2])
    edited["prov"] = json.loads(json.dumps(edited["prov"]).replace("2026-01-02T03:04", "2025-01-02T03:04"))
    document = provmodel.job_document(job_id, [*docs, edited | {"_id": "edited"}])
    text = provmodel.serialize(document, "provn")
    assert ProvDocument.deserialize(content=text, format="provn", profile="strict") == document
    step = provmodel.step_id(job_id, "thumbnailed", "resize:w=256,h=256/format:png",
                             sha(f"{job_id}-original"))
    # the started record, the completion and the edited completion, none merged away
    assert len([r for r in records(document, "Activity") if r.identifier == step]) == 3
