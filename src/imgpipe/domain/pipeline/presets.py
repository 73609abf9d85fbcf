"""Named pipelines: the built-in presets and user presets from configuration."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgpipe.domain.pipeline.errors import PipelineError
from imgpipe.domain.pipeline.model import Pipeline
from imgpipe.domain.pipeline.parse import is_bare_name, parse_steps
from imgpipe.errors import ConfigError

DEFAULT_PIPELINE = "thumbnail"
"""The pipeline used when a request names none."""

BUILTIN_PRESETS: dict[str, str] = {
    "thumbnail": "resize:w=256,h=256/format:jpeg",
    "dither": "dither/format:png",
    "web": "resize:w=1600,h=1600/format:webp",
    "preview": "resize:w=800,h=800/format:jpeg,q=75,progressive=true",
    "avatar": "resize:w=128,h=128,fit=cover,gravity=attention/format:webp",
    "social": "resize:w=1200,h=630,fit=cover,gravity=attention/format:jpeg,q=85",
    "square": "resize:w=512,h=512,fit=contain,bg=00000000/format:png",
    "avif": "resize:w=1600,h=1600/format:avif",
    "lossless": "format:png",
    "print": "format:tiff,keep=icc",
}
"""Presets every imgpipe knows; user presets of the same name replace them."""


def parse_pipeline(
    spec: str | list[Any] | dict[str, Any] | Pipeline,
    presets: Mapping[str, str] | None = None,
) -> Pipeline:
    """Parse a pipeline given as text, JSON (text or decoded) or a preset name.

    A bare name (``thumbnail``) is looked up in ``presets`` first, then in the
    built-in presets; an unknown bare name that is not an operation raises
    :class:`PipelineError` with reason ``unknown_preset``. Anything that does
    not parse or validate raises :class:`PipelineError` (``invalid_pipeline``).
    """
    if isinstance(spec, str) and is_bare_name(spec.strip()):
        name = spec.strip()
        table = {**BUILTIN_PRESETS, **(presets or {})}
        if name in table:
            try:
                return parse_steps(table[name])
            except PipelineError as exc:
                raise PipelineError(
                    f"preset {name!r} is invalid: {exc.message}", preset=name
                ) from None
        from imgpipe.domain.pipeline.base import OPERATIONS

        if name not in OPERATIONS:
            raise PipelineError(
                f"unknown preset {name!r}; expected one of: {', '.join(sorted(table))}"
                " or pipeline steps",
                reason="unknown_preset",
                preset=name,
            )
    return parse_steps(spec)


def _read(value: str) -> Any:
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"IMGPIPE_PRESETS: inline JSON does not parse: {exc}") from None
    path = Path(text).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"IMGPIPE_PRESETS: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode())
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"IMGPIPE_PRESETS: {path} does not parse: {exc}") from None


def load_presets(value: str | None) -> dict[str, str]:
    """User presets from configuration: a JSON or TOML file path, or inline JSON.

    The document maps names to pipelines, either at the top level or under a
    ``presets`` key; a pipeline is text (``"resize:w=64/format:png"``) or a JSON
    list of steps. Every preset is validated here, so a bad one stops the
    service at start with a :class:`ConfigError` naming it.
    """
    if value is None or not value.strip():
        return {}
    document = _read(value)
    if isinstance(document, dict) and isinstance(document.get("presets"), dict):
        document = document["presets"]
    if not isinstance(document, dict):
        raise ConfigError("IMGPIPE_PRESETS: expected a mapping of preset names to pipelines")
    result: dict[str, str] = {}
    for name, spec in document.items():
        if not isinstance(name, str) or not is_bare_name(name):
            raise ConfigError(
                f"IMGPIPE_PRESETS: preset name {name!r}: expected lower-case letters, digits, '-' or '_'"
            )
        if not isinstance(spec, (str, list)):
            raise ConfigError(f"IMGPIPE_PRESETS: preset {name!r}: expected pipeline text or a list")
        try:
            pipeline = parse_steps(spec)
        except PipelineError as exc:
            raise ConfigError(f"IMGPIPE_PRESETS: preset {name!r}: {exc.message}") from None
        result[name] = pipeline.canonical()
    return result
