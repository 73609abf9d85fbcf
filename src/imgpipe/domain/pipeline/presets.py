"""Named pipelines: the built-in presets and the parser that resolves a name.

User presets (the ``IMGPIPE_PRESETS`` file) are read by
:mod:`imgpipe.domain.pipeline.preset_file`; a user preset of a built-in's name
replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgpipe.domain.pipeline.errors import PipelineError
from imgpipe.domain.pipeline.model import Pipeline
from imgpipe.domain.pipeline.parse import is_bare_name, parse_steps

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

BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "thumbnail": "256 px JPEG thumbnail (the default)",
    "dither": "Floyd-Steinberg dithered PNG",
    "web": "at most 1600 px, WebP, for web pages",
    "preview": "800 px progressive JPEG preview",
    "avatar": "128 px square WebP, cropped on the interesting part",
    "social": "1200x630 JPEG card for social media",
    "square": "512 px square PNG, letterboxed on transparency",
    "avif": "at most 1600 px, AVIF",
    "lossless": "lossless PNG of the whole image",
    "print": "TIFF keeping the ICC colour profile",
}
"""What each built-in preset is for, as the page and ``GET /presets`` show it."""


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
    try:
        return parse_steps(spec)
    except RecursionError:
        raise PipelineError("the pipeline is nested too deeply to read") from None
