"""The presets file (``IMGPIPE_PRESETS``): named pipelines with descriptions.

Upload, runner, imageproc and the page read the same file, so a preset name
means the same pipeline everywhere. The file is TOML (or JSON; inline JSON is
accepted in the variable itself)::

    [presets.banner]
    description = "Wide banner for the project page"
    pipeline = "resize:w=1200,h=300,fit=cover/format:webp"

    [presets]
    small = "resize:w=64/format:png"        # short form: no description

Invariants: every entry is validated when the file is read (a service stops
at start, and ``imgpipe presets check`` exits non-zero); each error names the
file and the entry; a preset's pipeline is kept in canonical form.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgpipe.domain.pipeline.errors import PipelineError
from imgpipe.domain.pipeline.parse import is_bare_name, parse_steps
from imgpipe.domain.pipeline.presets import BUILTIN_DESCRIPTIONS, BUILTIN_PRESETS
from imgpipe.errors import ConfigError

VARIABLE = "IMGPIPE_PRESETS"
MAX_DESCRIPTION = 500
ENTRY_KEYS = frozenset({"pipeline", "description"})


@dataclass(frozen=True)
class Preset:
    """A named pipeline (canonical text) and what it is for."""

    name: str
    pipeline: str
    description: str = ""
    builtin: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pipeline": self.pipeline,
                "description": self.description, "builtin": self.builtin}


class PresetError(ConfigError):
    """A presets file that cannot be used; ``details`` name the file and the entry."""

    reason = "invalid_presets"


def _fail(source: str, message: str, preset: str | None = None) -> PresetError:
    where = f"{source}: preset {preset!r}: " if preset is not None else f"{source}: "
    error = PresetError(f"{VARIABLE}: {where}{message}")
    if preset is not None:
        error.details["preset"] = preset
    return error


def _read(value: str) -> tuple[str, Any]:
    """``(source, document)``: the parsed file (TOML by suffix, else JSON) or inline JSON."""
    text = value.strip()
    if text.startswith("{"):
        try:
            return "inline JSON", json.loads(text)
        except ValueError as exc:
            raise _fail("inline JSON", f"does not parse: {exc}") from None
    path = Path(text).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(str(path), f"cannot be read: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            return str(path), tomllib.loads(raw.decode())
        return str(path), json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(str(path), f"does not parse: {exc}") from None


def _entry(source: str, name: Any, entry: Any) -> Preset:
    if not isinstance(name, str) or not is_bare_name(name):
        raise _fail(source, "a preset name is lower-case letters, digits, '-' or '_', "
                    "starting with a letter", str(name)[:64])
    description: Any = ""
    spec: Any = entry
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise _fail(source, f"unknown key {unknown[0]!r}; expected 'pipeline' and "
                        "optionally 'description'", name)
        if "pipeline" not in entry:
            raise _fail(source, "has no 'pipeline'", name)
        spec, description = entry["pipeline"], entry.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise _fail(source, f"'description' must be text of at most {MAX_DESCRIPTION} "
                    "characters", name)
    if not isinstance(spec, (str, list)):
        raise _fail(source, "expected pipeline text, a list of steps or a table with "
                    "'pipeline'", name)
    try:
        pipeline = parse_steps(spec)
    except PipelineError as exc:
        raise _fail(source, exc.message, name) from None
    return Preset(name, pipeline.canonical(), description.strip())


def read_presets(value: str | None) -> dict[str, Preset]:
    """User presets from ``value`` (a TOML/JSON file path or inline JSON), each validated.

    The document maps names to entries at the top level or under ``presets``;
    an entry is pipeline text, a JSON list of steps, or a table with
    ``pipeline`` and ``description``. Raises :class:`PresetError` naming the
    first bad entry.
    """
    if value is None or not value.strip():
        return {}
    source, document = _read(value)
    if isinstance(document, dict) and isinstance(document.get("presets"), dict):
        document = document["presets"]
    if not isinstance(document, dict):
        raise _fail(source, "expected a table of preset names to pipelines")
    return {name: _entry(source, name, entry) for name, entry in document.items()}


def load_presets(value: str | None) -> dict[str, str]:
    """User presets as name → canonical pipeline (see :func:`read_presets`)."""
    return {name: preset.pipeline for name, preset in read_presets(value).items()}


def all_presets(user: dict[str, Preset] | None = None) -> dict[str, Preset]:
    """The built-in presets with ``user`` presets over them, sorted by name."""
    table = {name: Preset(name, parse_steps(spec).canonical(), BUILTIN_DESCRIPTIONS.get(name, ""),
                          builtin=True)
             for name, spec in BUILTIN_PRESETS.items()}
    table.update(user or {})
    return dict(sorted(table.items()))
