"""The PROV-JSON fragment of one provenance event, built as plain dicts.

The provenance service stores, with every event, the PROV records the event
adds to its job's record. :func:`imgpipe.domain.prov.event_fragment` builds
them with the ``prov`` package, whose objects (qualified names, typed value
sets, a serializer, a JSON round trip) cost more CPU than the rest of storing
an event. :func:`fragment_json` writes the same records straight as the
PROV-JSON the ``prov`` serializer produces, key for key and in the same order
(``tests/test_prov_json.py`` compares both over generated events), so stored
documents do not change. Reading, merging and serialising records (PROV-N,
JSON-LD, a job's bundle) stays with the ``prov`` package.

What the ``prov`` serializer does, and this module copies: records are
grouped by kind in the order a kind first appears, formal attributes come
before the others, a relation without identifier gets ``_:id<n>`` numbered in
order of appearance (two equal relations share one), records of one
identifier become a list, an attribute with several distinct values a list,
integers and qualified names are typed values and times ISO 8601 text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from imgpipe.domain.events import ObjectRef, ProvenanceEvent, SoftwareAgent, stable_id
from imgpipe.domain.pipeline import PipelineError, parse_pipeline

#: The namespaces of :mod:`imgpipe.domain.prov`, in the order it registers them.
PREFIXES = {
    "imgpipe": "urn:imgpipe:vocab:",
    "sha256": "nih:sha-256;",
    "job": "urn:imgpipe:job:",
    "sw": "urn:imgpipe:software:",
    "client": "urn:imgpipe:client:",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1

Value = str | dict[str, str]


def slug(text: str) -> str:
    """``text`` as a safe local part of a name."""
    return _UNSAFE.sub("_", text).strip("._") or "_"


def qname(text: str) -> dict[str, str]:
    """A qualified name as an attribute value."""
    return {"$": text, "type": "xsd:QName"}


def integer(value: int) -> dict[str, str]:
    """An integer as ``prov`` types it: by magnitude."""
    if -_INT32 - 1 <= value <= _INT32:
        kind = "xsd:int"
    elif -_INT64 - 1 <= value <= _INT64:
        kind = "xsd:long"
    else:
        kind = "xsd:integer"
    return {"$": str(value), "type": kind}


def time_text(value: datetime) -> str:
    """xsd:dateTime text; an offset that is not whole minutes becomes UTC."""
    offset = value.utcoffset()
    if offset is not None and (offset.total_seconds() % 60 or offset.microseconds):
        value = value.astimezone(UTC)
    return value.isoformat()


@lru_cache(maxsize=256)
def operations(pipeline: str) -> str | None:
    """The pipeline's operations with their parameters, as JSON, when it parses here."""
    try:
        return json.dumps(parse_pipeline(pipeline).to_json(), separators=(",", ":"))
    except PipelineError:
        return None


def step_name(job_id: str, stage: str, pipeline: str, source: str = "") -> str:
    """``job:<job>.<stage>.<hash>``: the activity of one step (:func:`prov.step_id`)."""
    return f"job:{job_id}.{slug(stage)}.{stable_id(stage, pipeline, source)[:12]}"


def agent_name(agent: SoftwareAgent) -> str:
    return f"sw:{slug(agent.name)}-{slug(agent.version)}"


def _frozen(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((k, v if isinstance(v, str) else tuple(v.items())) for k, v in record.items())


class _Fragment:
    """A PROV-JSON container filled in the order ``prov`` would write it."""

    def __init__(self) -> None:
        self.container: dict[str, Any] = {"prefix": dict(PREFIXES)}
        self._anonymous: dict[tuple[str, tuple[Any, ...]], str] = {}

    def _put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        records = self.container.setdefault(kind, {})
        if name not in records:
            records[name] = record
        elif isinstance(records[name], dict):
            records[name] = [records[name], record]
        else:
            records[name].append(record)

    def element(self, kind: str, name: str, record: dict[str, Any]) -> None:
        self._put(kind, name, record)

    def relation(self, kind: str, record: dict[str, Any],
                 extra: dict[str, Value] | None = None) -> None:
        """A relation (no identifier): formal attributes without the ``None`` ones, then ``extra``."""
        record = {k: v for k, v in record.items() if v is not None} | (extra or {})
        key = (kind, _frozen(record))
        name = self._anonymous.get(key)
        if name is None:
            name = self._anonymous[key] = f"_:id{len(self._anonymous) + 1}"
        self._put(kind, name, record)

    def activity(self, name: str, start: datetime | None, end: datetime | None,
                 attributes: Iterable[tuple[str, Value]]) -> None:
        record: dict[str, Any] = {}
        if start is not None:
            record["prov:startTime"] = time_text(start)
        if end is not None:
            record["prov:endTime"] = time_text(end)
        for key, value in attributes:
            values = record.setdefault(key, [])
            if value not in values:
                values.append(value)
        self.element("activity", name, {
            k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in record.items()})


def _time(value: datetime | None) -> str | None:
    return None if value is None else time_text(value)


def _image(doc: _Fragment, ref: ObjectRef) -> str:
    name = f"sha256:{ref.sha256}"
    record: dict[str, Value] = {
        "prov:type": qname("imgpipe:Image"),
        "imgpipe:sha256": ref.sha256,
        "imgpipe:size": integer(ref.size),
        "imgpipe:mediaType": ref.media_type,
        "prov:location": ref.uri,
    }
    if ref.format is not None:
        record["imgpipe:format"] = ref.format
    if ref.width is not None:
        record["imgpipe:width"] = integer(ref.width)
    if ref.height is not None:
        record["imgpipe:height"] = integer(ref.height)
    if ref.payload_sha256 is not None:
        record["imgpipe:payloadSha256"] = ref.payload_sha256
    doc.element("entity", name, record)
    return name


def _agents(doc: _Fragment, activity: str, agents: Iterable[SoftwareAgent]) -> None:
    for agent in agents:
        name = agent_name(agent)
        doc.element("agent", name, {
            "prov:type": qname("prov:SoftwareAgent"),
            "prov:label": f"{agent.name} {agent.version}",
            "imgpipe:software": agent.name,
            "imgpipe:version": agent.version,
        })
        extra: dict[str, Value] | None = (
            {"imgpipe:instance": agent.instance} if agent.instance else None)
        doc.relation("wasAssociatedWith", {"prov:activity": activity, "prov:agent": name}, extra)


def _received(doc: _Fragment, event: ProvenanceEvent) -> None:
    activity = f"job:{event.job_id}.upload"
    attributes: list[tuple[str, Value]] = [
        ("prov:type", qname("imgpipe:Upload")),
        ("prov:label", f"upload of {event.filename or 'an image'}"),
        ("imgpipe:job", event.job_id),
    ]
    if event.filename:
        attributes.append(("imgpipe:filename", event.filename))
    attributes += [("imgpipe:pipeline", p) for p in event.pipelines]
    doc.activity(activity, event.time, event.time, attributes)
    _agents(doc, activity, event.agents)
    image = event.output or event.input
    if image is None:
        return
    entity = _image(doc, image)
    doc.relation("wasGeneratedBy", {
        "prov:entity": entity, "prov:activity": activity, "prov:time": time_text(event.time),
    }, {"prov:role": qname("imgpipe:upload")})
    if event.client:
        client = f"client:{slug(event.client)}"
        doc.element("agent", client, {"prov:type": qname("prov:Agent"),
                                      "imgpipe:address": event.client})
        doc.relation("wasAssociatedWith", {"prov:activity": activity, "prov:agent": client},
                     {"prov:role": qname("imgpipe:uploader")})
        doc.relation("wasAttributedTo", {"prov:entity": entity, "prov:agent": client})


def _step(doc: _Fragment, event: ProvenanceEvent) -> None:
    pipeline = event.pipeline or ""
    source = event.input.sha256 if event.input is not None else ""
    activity = step_name(event.job_id, event.stage, pipeline, source)
    attributes: list[tuple[str, Value]] = [
        ("prov:type", qname("imgpipe:Step")),
        ("prov:label", f"{event.stage}: {pipeline}"),
        ("imgpipe:job", event.job_id),
        ("imgpipe:stage", event.stage),
        ("imgpipe:pipeline", pipeline),
    ]
    if ops := operations(pipeline):
        attributes.append(("imgpipe:operations", ops))
    if event.kind == "step.started":
        doc.activity(activity, None, None, attributes)
        if event.input is not None:
            trigger = _image(doc, event.input)
            doc.relation("wasStartedBy", {"prov:activity": activity, "prov:trigger": trigger,
                                          "prov:time": time_text(event.started_at or event.time)})
        _agents(doc, activity, event.agents)
        return
    attributes.append(("imgpipe:attempt", integer(event.attempt)))
    if event.kind == "step.completed":
        doc.activity(activity, event.started_at, event.ended_at, attributes)
    else:
        doc.activity(activity, None, None, attributes)
        ended: dict[str, Value] = {"imgpipe:outcome": "failed"}
        if event.reason:
            ended["imgpipe:reason"] = event.reason
        if event.message:
            ended["imgpipe:message"] = event.message
        doc.relation("wasEndedBy", {"prov:activity": activity,
                                    "prov:time": time_text(event.ended_at or event.time)}, ended)
    _agents(doc, activity, event.agents)
    if event.input is None:
        return
    used = _image(doc, event.input)
    doc.relation("used", {"prov:activity": activity, "prov:entity": used,
                          "prov:time": _time(event.started_at)},
                 {"prov:role": qname("imgpipe:input")})
    if event.kind != "step.completed" or event.output is None:
        return
    generated = _image(doc, event.output)
    doc.relation("wasGeneratedBy", {"prov:entity": generated, "prov:activity": activity,
                                    "prov:time": _time(event.ended_at)},
                 {"prov:role": qname("imgpipe:output")})
    doc.relation("wasDerivedFrom", {"prov:generatedEntity": generated,
                                    "prov:usedEntity": used, "prov:activity": activity})
    runner = next((a for a in event.agents if a.name == "imgpipe-runner"), None)
    if runner is not None:
        doc.relation("wasAttributedTo", {"prov:entity": generated,
                                         "prov:agent": agent_name(runner)})


def fragment_json(event: ProvenanceEvent) -> dict[str, Any]:
    """The PROV-JSON of the records ``event`` adds to its job's record, ready to store."""
    doc = _Fragment()
    if event.kind == "job.received":
        _received(doc, event)
    else:
        _step(doc, event)
    return doc.container
