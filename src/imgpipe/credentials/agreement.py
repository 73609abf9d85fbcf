"""Do an output's Content Credentials and its PROV record say the same?

The signed ``org.imgpipe.step`` assertion names job, stage, pipeline, input
sha256 and payload sha256; the record's ``step.completed`` document names the
same. :class:`RecordCheck` validates the stored output (signature, hash
binding, trust against the configured anchors) and lists every field where
the two disagree. Trust is reported, not required: the record read from your
own database is the reference here; ``imgpipe verify --file`` is the strict
check for a file met elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from imgpipe.credentials.reading import inspect


def differences(step: Mapping[str, Any], doc: Mapping[str, Any]) -> list[str]:
    """Fields where the signed step and the record's document differ."""
    output, source = doc.get("output") or {}, doc.get("input") or {}
    expected = {
        "job_id": doc.get("job_id"), "stage": doc.get("stage"), "pipeline": doc.get("pipeline"),
        "input_sha256": source.get("sha256"),
        "payload_sha256": output.get("payload_sha256") or output.get("sha256"),
    }
    return [f"{name}: credentials say {step.get(name)!r}, the record {want!r}"
            for name, want in expected.items() if step.get(name) != want]


class RecordCheck:
    """Checks a stored output's credentials against its record (in a worker thread)."""

    def __init__(self, anchors: str | None = None) -> None:
        self.anchors = anchors

    async def __call__(self, data: bytes, doc: Mapping[str, Any]) -> dict[str, Any]:
        media_type = (doc.get("output") or {}).get("media_type")
        found = await asyncio.to_thread(inspect, data, media_type, self.anchors)
        report: dict[str, Any] = {"verdict": found.verdict, "agrees": False, "differences": []}
        active = found.active
        if active is not None:
            report["signer"] = active.signer
        if found.verdict in ("none", "invalid") or active is None:
            report["differences"] = [f"the stored output's credentials are {found.verdict}"]
            return report
        if active.imgpipe is None:
            report["differences"] = ["the credentials carry no org.imgpipe.step assertion"]
            return report
        report["differences"] = differences(active.imgpipe, doc)
        report["agrees"] = not report["differences"]
        return report
