"""Queries over the provenance record: a job's records and an image's lineage.

Lineage follows content: a step's input and output are stored with their
sha256 (indexed), and a chained stage's input is the previous stage's
output, so walking "what was this made from" and "what was made from this"
by hash connects stages and jobs. The walk uses only equality queries on
``job_id``, ``input.sha256`` and ``output.sha256``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imgpipe.errors import ImgpipeError, InvalidInput
from imgpipe.provstore.protocol import Doc, ProvenanceStore

SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Most records a lineage query reads before it answers with ``truncated``.
MAX_RECORDS = 2000


class ContentNotFound(ImgpipeError):
    reason = "content_not_found"
    status = 404


def _time(doc: Mapping[str, Any]) -> str:
    return str(doc.get("started_at") or doc.get("time") or "")


#: Records read per page of a job's records.
FIRST_PAGE = 500


async def job_records(store: ProvenanceStore, job_id: str, *, first: int = FIRST_PAGE) -> list[Doc]:
    """Every provenance record of a job (all stages), oldest first: read a page at a
    time (:meth:`~imgpipe.provstore.protocol.ProvenanceStore.pages`, CouchDB's bookmarks),
    each document once."""
    docs = [doc async for page in store.pages({"job_id": job_id}, page_size=first)
            for doc in page]
    return sorted(docs, key=lambda d: (_time(d), str(d.get("_id"))))


def check_sha256(value: str) -> str:
    """``value`` as a lower-case hex sha256, or :class:`InvalidInput`."""
    sha = value.strip().lower()
    if not SHA256.match(sha):
        raise InvalidInput(
            f"'{value[:80]}' is not a sha256: expected 64 hexadecimal digits.",
            reason="invalid_sha256",
        )
    return sha


def _ref(doc: Mapping[str, Any], side: str) -> dict[str, Any]:
    ref = doc.get(side)
    return dict(ref) if isinstance(ref, Mapping) else {}


def _sha(doc: Mapping[str, Any], side: str) -> str | None:
    value = _ref(doc, side).get("sha256")
    return str(value) if value else None


def step_key(doc: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """What identifies a step: job, stage, pipeline and input (a chained stage may run
    one pipeline over several images of a job)."""
    return (str(doc.get("job_id")), str(doc.get("stage")), str(doc.get("pipeline") or ""),
            _sha(doc, "input") or "")


def steps(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per step (job, stage, pipeline, input) with its outcome, oldest first.

    A step that completed counts as completed even if an earlier attempt
    failed; one that only started is ``started``.
    """
    by_step: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    rank = {"step.started": 0, "step.failed": 1, "step.completed": 2}
    for doc in docs:
        kind = str(doc.get("kind"))
        if kind not in rank:
            continue
        entry = by_step.setdefault(step_key(doc), {
            "job_id": doc.get("job_id"), "stage": doc.get("stage"),
            "pipeline": doc.get("pipeline"), "outcome": "started", "_rank": -1,
            "input_sha256": _sha(doc, "input"), "output_sha256": None,
            "started_at": doc.get("started_at"), "ended_at": None,
        })
        if rank[kind] > entry["_rank"]:
            entry.update({
                "_rank": rank[kind], "outcome": kind.removeprefix("step."),
                "input_sha256": _sha(doc, "input") or entry["input_sha256"],
                "output_sha256": _sha(doc, "output"),
                "started_at": doc.get("started_at") or entry["started_at"],
                "ended_at": doc.get("ended_at"),
            })
            if kind == "step.failed":
                entry["error"] = {"reason": doc.get("reason"), "message": doc.get("message")}
            else:
                entry.pop("error", None)
            engine = [a for a in doc.get("agents") or [] if a.get("name") == "libvips"]
            if engine:
                entry["libvips"] = engine[0].get("version")
    result = sorted(by_step.values(), key=lambda e: (str(e["started_at"] or ""), e["stage"]))
    for entry in result:
        del entry["_rank"]
    return result


def uploads(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The uploads among ``docs`` (one per job)."""
    seen: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc.get("kind") == "job.received":
            seen[str(doc.get("job_id"))] = {
                "job_id": doc.get("job_id"), "sha256": _sha(doc, "output"),
                "filename": doc.get("filename"), "received_at": doc.get("time"),
            }
    return sorted(seen.values(), key=lambda u: str(u["received_at"] or ""))


def images(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the records say of each image they mention, by sha256."""
    result: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for side in ("input", "output"):
            ref = _ref(doc, side)
            if not ref.get("sha256"):
                continue
            entry = result.setdefault(str(ref["sha256"]), {"sha256": ref["sha256"], "locations": []})
            for name in ("size", "media_type", "format", "width", "height"):
                if ref.get(name) is not None:
                    entry.setdefault(name, ref[name])
            location = f"s3://{ref.get('bucket')}/{ref.get('key')}"
            if location not in entry["locations"]:
                entry["locations"].append(location)
    return result


@dataclass
class Lineage:
    """An image's ancestry and descendants, with the records that show them."""

    sha256: str
    ancestors: list[str] = field(default_factory=list)
    descendants: list[str] = field(default_factory=list)
    records: dict[str, Doc] = field(default_factory=dict)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of ``GET /lineage/{sha256}``."""
        docs = list(self.records.values())
        known = images(docs)
        relation = {self.sha256: "self"} | {s: "ancestor" for s in self.ancestors} | {
            s: "descendant" for s in self.descendants}
        entities = [known.get(sha, {"sha256": sha, "locations": []}) | {"relation": rel}
                    for sha, rel in relation.items()]
        step_list = [s for s in steps(docs) if s["input_sha256"] in relation]
        return {
            "sha256": self.sha256,
            "ancestors": self.ancestors,
            "descendants": self.descendants,
            "entities": entities,
            "steps": step_list,
            "uploads": [u for u in uploads(docs) if u["sha256"] in relation],
            "jobs": sorted({str(d.get("job_id")) for d in docs}),
            "truncated": self.truncated,
        }


async def lineage(
    store: ProvenanceStore, sha256: str, *, max_records: int = MAX_RECORDS,
    visible: Callable[[str], Awaitable[bool]] | None = None,
) -> Lineage:
    """Everything ``sha256`` was derived from and everything derived from it.

    With ``visible`` (job id -> may the asker see it), records of other jobs
    are neither returned nor followed. Raises :class:`ContentNotFound` when
    no (visible) record mentions the content.
    """
    shown: dict[str, bool] = {}

    async def keep(doc: Doc) -> bool:
        if visible is None:
            return True
        job_id = str(doc.get("job_id"))
        if job_id not in shown:
            shown[job_id] = await visible(job_id)
        return shown[job_id]

    sha = check_sha256(sha256)
    result = Lineage(sha)

    async def walk(start: str, field_from: str, field_to: str, found: list[str]) -> None:
        seen = {start}
        frontier = [start]
        while frontier:
            if len(result.records) >= max_records:
                result.truncated = True
                return
            current = frontier.pop(0)
            for doc in await store.find({f"{field_from}.sha256": current}, limit=max_records):
                if not await keep(doc):
                    continue
                result.records[str(doc.get("_id"))] = doc
                if doc.get("kind") != "step.completed":
                    continue
                following = _sha(doc, field_to)
                if following and following not in seen:
                    seen.add(following)
                    found.append(following)
                    frontier.append(following)

    await walk(sha, "output", "input", result.ancestors)
    await walk(sha, "input", "output", result.descendants)
    if not result.records:
        raise ContentNotFound(f"imgpipe has no record of an image with sha256 {sha}.")
    return result
