"""The validated pipeline model and its canonical text form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from imgpipe.domain.pipeline.base import Operation
from imgpipe.domain.pipeline.output import EXTENSIONS, MEDIA_TYPES, Autorotate, Format

MAX_STEPS = 32
"""Most processing steps a pipeline may have (format and autorotate not counted)."""


def format_value(value: Any) -> str:
    """A parameter value in the text form (reserved characters percent-encoded)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(0.0 if value == 0 else value).removesuffix(".0")
    if isinstance(value, int):
        return str(value)
    return quote(str(value), safe="")


def step_text(op: Operation) -> str:
    """One step in canonical text form: ``name`` or ``name:main,key=value``."""
    parts: list[str] = []
    for key, value in op.arguments():
        if key == op.main and not parts:
            parts.append(format_value(value))
        else:
            parts.append(f"{key}={format_value(value)}")
    return op.name + (":" + ",".join(parts) if parts else "")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and value == 0:
        return 0.0
    return value


@dataclass(frozen=True)
class Pipeline:
    """An ordered list of validated operations plus output settings.

    Build one with :func:`imgpipe.domain.pipeline.parse_pipeline`. Two pipelines
    that do the same thing compare equal and print the same :meth:`canonical`.
    """

    steps: tuple[Operation, ...] = ()
    output: Format = field(default_factory=Format)
    autorotate: bool = True

    def canonical(self) -> str:
        """The canonical text form: auto-orientation, steps, then the format step."""
        parts = [] if self.autorotate else [step_text(Autorotate(on=False))]
        parts.extend(step_text(op) for op in self.steps)
        parts.append(step_text(self.output))
        return "/".join(parts)

    def to_json(self) -> list[dict[str, Any]]:
        """The JSON form: one ``{"op": name, param: value, ...}`` per step.

        Parameters at their defaults are left out, as in the canonical form.
        """
        ops: list[Operation] = [] if self.autorotate else [Autorotate(on=False)]
        ops.extend(self.steps)
        ops.append(self.output)
        return [
            {"op": op.name, **{k: _json_value(v) for k, v in op.arguments()}} for op in ops
        ]

    @property
    def output_format(self) -> str:
        """Output format name: jpeg, png, webp, avif, tiff or gif (jpeg by default)."""
        return self.output.format

    @property
    def media_type(self) -> str:
        """Media type of the output, e.g. ``image/webp``."""
        return MEDIA_TYPES[self.output.format]

    @property
    def extension(self) -> str:
        """File extension of the output without a dot, e.g. ``jpg``."""
        return EXTENSIONS[self.output.format]

    def __str__(self) -> str:
        return self.canonical()


def catalogue_entry(cls: type[Operation]) -> dict[str, Any]:
    """One operation's description, generated from its model."""
    schema = cls.model_json_schema()
    params: dict[str, Any] = {}
    reverse: dict[str, list[str]] = {}
    for alias, target in cls.aliases.items():
        reverse.setdefault(target, []).append(alias)
    for key, prop in schema.get("properties", {}).items():
        entry = _describe(prop, schema.get("$defs", {}))
        entry["required"] = key in schema.get("required", [])
        if key in reverse:
            entry["aliases"] = sorted(reverse[key])
        params[key] = entry
    doc = (cls.__doc__ or "").strip()
    return {
        "name": cls.name,
        "summary": doc.split("\n", 1)[0],
        "description": " ".join(doc.split()),
        "main": cls.main,
        "params": params,
    }


def _describe(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    options = prop.get("anyOf", [prop])
    kinds = [o for o in options if o.get("type") != "null"]
    main = dict(kinds[0]) if kinds else {}
    out: dict[str, Any] = {"type": main.get("type", "string")}
    for key in ("minimum", "maximum", "enum"):
        if key in main:
            out[key] = main[key]
    if "default" in prop:
        out["default"] = prop["default"]
    if "description" in prop:
        out["description"] = prop["description"]
    return out
