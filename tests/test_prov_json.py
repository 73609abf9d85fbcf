"""The stored PROV-JSON fragment is the same whether the ``prov`` package builds it or not.

:func:`imgpipe.domain.prov.fragment_json` writes the fragment as plain dicts;
the ``prov`` package (``event_fragment`` + its PROV-JSON serializer) stays the
reference. Both must give the same JSON text, key order included, for every
kind of event: a user's stored records must not change with the builder.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgpipe.domain.events import ObjectRef, ProvenanceEvent, SoftwareAgent
from imgpipe.domain.prov import event_fragment, fragment_json
from imgpipe.provenance.recorder import to_document
from tests.prov_events import RUNNER, UPLOAD, VIPS, chain, received, ref, sha, step


def by_prov(event: ProvenanceEvent) -> dict[str, Any]:
    with warnings.catch_warnings():  # odd names and offsets make prov warn, not change
        warnings.simplefilter("ignore")
        text = event_fragment(event).serialize(format="json")
    assert text is not None
    result: dict[str, Any] = json.loads(text)
    return result


def assert_same(event: ProvenanceEvent) -> None:
    expected = json.dumps(by_prov(event))
    assert json.dumps(fragment_json(event)) == expected
    # as the provenance service sees it: the event read back from the wire
    wired = ProvenanceEvent.model_validate_json(event.to_bytes())
    assert json.dumps(fragment_json(wired)) == json.dumps(by_prov(wired))


def test_a_chained_job_and_its_failures() -> None:
    job_id, events = chain("c" * 32)
    thumb = ref("thumb", width=256, height=192)
    events += step(job_id, "again", "resize:w=64,h=64/format:webp", thumb, None, failed=True)
    events += step(job_id, "retried", "thumbnail", thumb, ref("r"), attempt=3)
    for event in events:
        assert_same(event)


def test_signed_output_same_bytes_in_and_out_repeated_agents_and_pipelines() -> None:
    image = ref("same", payload_sha256=sha("payload"), width=2**40, height=-1)
    signer = SoftwareAgent(name="imgpipe-imageproc", version="1.0", instance="a")
    events = [
        *step("j" * 32, "s", "bad pipeline |", image, image),  # output bytes = input bytes
        *step("j" * 32, "s", "thumbnail", image, ref("o", payload_sha256=sha("p")),
              attempt=2**70),
        received("j" * 32, image, pipelines=("thumbnail", "a", "thumbnail")),
        received("j" * 32, image, pipelines=()),
    ]
    doubled = events[1].model_copy(update={"agents": (RUNNER, signer, signer, VIPS, RUNNER)})
    renamed = events[1].model_copy(update={"agents": (signer.model_copy(update={"instance": "b"}),
                                                      signer)})
    for event in [*events, doubled, renamed]:
        assert_same(event)


def test_stored_documents_keep_their_fields() -> None:
    _, events = chain("d" * 32)
    for event in events:
        assert to_document(event)["prov"] == by_prov(event)


texts = st.text(max_size=12)
names = st.one_of(texts, st.sampled_from(["thumbnail", "resize:w=256,h=256/format:jpeg",
                                          "dither/format:png", "a b:c/d", "ü.é", ""]))
offsets = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-14 * 3600, 14 * 3600).map(lambda s: timezone(timedelta(seconds=s))),
    st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))),
)
times = st.builds(lambda dt, tz: dt.replace(tzinfo=tz),
                  st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
                  offsets)
hexes = st.sampled_from([sha(str(i)) for i in range(3)])
sizes = st.one_of(st.integers(0, 2**31 + 5), st.integers(0, 2**70))
dims = st.one_of(st.none(), st.integers(-(2**64), 2**64))
refs = st.builds(
    ObjectRef, bucket=names, key=names, sha256=hexes, size=sizes, media_type=names,
    format=st.one_of(st.none(), names), width=dims, height=dims,
    payload_sha256=st.one_of(st.none(), hexes),
)
agents = st.one_of(
    st.sampled_from([RUNNER, VIPS, UPLOAD]),
    st.builds(SoftwareAgent, name=st.one_of(names, st.just("imgpipe-runner")), version=names,
              instance=st.one_of(st.none(), names)),
)
events = st.builds(
    ProvenanceEvent,
    event_id=st.just("e"), kind=st.sampled_from(
        ["job.received", "step.started", "step.completed", "step.failed"]),
    job_id=st.one_of(st.just("a" * 32), names), stage=names, time=times,
    pipeline=st.one_of(st.none(), names), pipelines=st.lists(names, max_size=4).map(tuple),
    input=st.one_of(st.none(), refs), output=st.one_of(st.none(), refs),
    started_at=st.one_of(st.none(), times), ended_at=st.one_of(st.none(), times),
    attempt=st.one_of(st.integers(1, 5), st.integers(-(2**70), 2**70)),
    agents=st.lists(agents, max_size=4).map(tuple),
    filename=st.one_of(st.none(), names), client=st.one_of(st.none(), names),
    reason=st.one_of(st.none(), names), message=st.one_of(st.none(), names),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_any_event_gives_the_same_json(event: ProvenanceEvent) -> None:
    assert_same(event)
