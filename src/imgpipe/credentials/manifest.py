"""A processing step as a C2PA manifest definition (plain JSON, no native calls).

What a manifest says about one output:

* ``c2pa.actions.v2``: ``c2pa.opened`` on the parent ingredient (the input),
  then one action per pipeline operation in order (:data:`ACTIONS`), then
  ``c2pa.transcoded`` for the encoding; each action names the operation's
  canonical text in ``description`` and imgpipe as ``softwareAgent``;
* the input as ``parentOf`` ingredient whose ``instance_id`` is
  ``sha256:<hex>`` of the input bytes (the binding the C2PA ingredient alone
  does not give an unsigned input);
* a watermark's overlay image as ``componentOf`` ingredient of ``c2pa.placed``;
* ``org.imgpipe.step`` (:data:`STEP_LABEL`): job, stage, canonical pipeline
  and operations, input and payload sha256, software versions, and where the
  PROV record of the step is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgpipe import __version__
from imgpipe.domain.pipeline import Operation, Pipeline
from imgpipe.domain.pipeline import geometry as g
from imgpipe.domain.pipeline import tone as t
from imgpipe.domain.pipeline.model import step_text
from imgpipe.domain.pipeline.output import MEDIA_TYPES
from imgpipe.domain.pipeline.overlay import Watermark

STEP_LABEL = "org.imgpipe.step"
"""The label of imgpipe's own assertion."""
STEP_SCHEMA = "imgpipe.c2pa-step/1"
PARENT = "input"
"""The label of the parent ingredient inside the manifest definition."""

ACTIONS: dict[type[Operation], str] = {
    g.Resize: "c2pa.resized",
    g.Pad: "c2pa.resized",
    g.Crop: "c2pa.cropped",
    g.Rotate: "c2pa.orientation",
    g.Flip: "c2pa.orientation",
    g.Flop: "c2pa.orientation",
    t.Blur: "c2pa.filtered",
    t.Sharpen: "c2pa.filtered",
    t.Pixelate: "c2pa.filtered",
    t.Dither: "c2pa.color_adjustments",
    t.Grayscale: "c2pa.color_adjustments",
    t.Brightness: "c2pa.color_adjustments",
    t.Contrast: "c2pa.color_adjustments",
    t.Gamma: "c2pa.color_adjustments",
    t.Flatten: "c2pa.color_adjustments",
    Watermark: "c2pa.placed",
}
"""The C2PA action of each operation model (format adds ``c2pa.transcoded``)."""


def media_type(fmt: str) -> str:
    """``jpeg`` -> ``image/jpeg`` for imgpipe's formats (anything else unchanged)."""
    return MEDIA_TYPES.get(fmt, fmt if "/" in fmt else f"image/{fmt}")


@dataclass(frozen=True)
class Step:
    """What is known of one processing step when its output is signed."""

    pipeline: Pipeline
    input_sha256: str
    input_format: str
    payload_sha256: str
    job_id: str | None = None
    stage: str | None = None
    title: str | None = None
    autorotated: bool = False
    software: Mapping[str, str] = field(default_factory=dict)
    record_url: str | None = None

    @property
    def record(self) -> dict[str, str]:
        """Where the step's PROV record is (bundle id, and URL when configured)."""
        if not self.job_id:
            return {}
        where = {"bundle": f"urn:imgpipe:job:{self.job_id}"}
        if self.record_url:
            where["url"] = self.record_url.format(job_id=self.job_id)
        return where


def overlay_label(op: Watermark) -> str:
    return f"overlay:{op.image}"


def _agent() -> dict[str, str]:
    return {"name": "imgpipe", "version": __version__}


def actions(step: Step, overlays: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The ``c2pa.actions.v2`` list of ``step``: opened, one per operation, transcoded.

    ``overlays`` names the watermark images added as ingredients (their
    ``c2pa.placed`` action points at them; others become ``c2pa.edited``).
    """
    done: list[dict[str, Any]] = [{
        "action": "c2pa.opened", "softwareAgent": _agent(),
        "parameters": {"ingredientIds": [PARENT]},
    }]
    if step.autorotated:
        done.append({"action": "c2pa.orientation", "softwareAgent": _agent(),
                     "description": "autorotate (EXIF orientation applied)"})
    for op in step.pipeline.steps:
        action: dict[str, Any] = {"action": ACTIONS.get(type(op), "c2pa.edited"),
                                  "softwareAgent": _agent(), "description": step_text(op)}
        if isinstance(op, Watermark):
            if op.image in overlays:
                action["parameters"] = {"ingredientIds": [overlay_label(op)]}
            else:
                action["action"] = "c2pa.edited"
        done.append(action)
    done.append({"action": "c2pa.transcoded", "softwareAgent": _agent(),
                 "description": step_text(step.pipeline.output)})
    return done


def step_assertion(step: Step) -> dict[str, Any]:
    """imgpipe's own assertion: what the PROV record of this step says, in short."""
    data: dict[str, Any] = {
        "schema": STEP_SCHEMA,
        "pipeline": step.pipeline.canonical(),
        "operations": step.pipeline.to_json(),
        "input_sha256": step.input_sha256,
        "payload_sha256": step.payload_sha256,
        "software": [{"name": n, "version": v} for n, v in sorted(step.software.items())],
    }
    if step.job_id:
        data["job_id"] = step.job_id
    if step.stage:
        data["stage"] = step.stage
    if step.record:
        data["record"] = step.record
    return {"label": STEP_LABEL, "data": data}


def parent_ingredient(step: Step) -> dict[str, Any]:
    """The input as ``parentOf`` ingredient, bound to its bytes by sha256."""
    return {
        "title": step.title or f"input.{step.input_format}",
        "format": media_type(step.input_format),
        "relationship": "parentOf",
        "label": PARENT,
        "instance_id": f"sha256:{step.input_sha256}",
        "metadata": {"org.imgpipe.sha256": step.input_sha256},
    }


def overlay_ingredient(name: str, fmt: str, sha256: str) -> dict[str, Any]:
    return {"title": name, "format": media_type(fmt), "relationship": "componentOf",
            "label": f"overlay:{name}", "instance_id": f"sha256:{sha256}"}


def definition(step: Step, overlays: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The manifest definition of ``step``'s output (ingredients are added beside it)."""
    out = step.pipeline.output_format
    return {
        "claim_generator_info": [_agent()],
        "title": f"{step.stage or 'output'}.{out}",
        "format": media_type(out),
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions(step, overlays)}},
            step_assertion(step),
        ],
    }
