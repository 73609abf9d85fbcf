"""The pipeline language: operation models, parser, canonical form and presets.

It is part of the domain because every service that accepts a pipeline validates
it the same way. Importing it loads no imaging library.
"""

from imgpipe.domain.pipeline import geometry, output, overlay, tone  # noqa: F401  (registers operations)
from imgpipe.domain.pipeline.base import OPERATIONS, Operation
from imgpipe.domain.pipeline.errors import PipelineError
from imgpipe.domain.pipeline.model import MAX_STEPS, Pipeline, catalogue_entry
from imgpipe.domain.pipeline.preset_file import (
    Preset,
    PresetError,
    all_presets,
    load_presets,
    read_presets,
)
from imgpipe.domain.pipeline.presets import BUILTIN_PRESETS, DEFAULT_PIPELINE, parse_pipeline


def catalogue() -> list[dict[str, object]]:
    """Every operation with its parameters' types, ranges and defaults."""
    return [catalogue_entry(cls) for cls in OPERATIONS.values()]


__all__ = [
    "BUILTIN_PRESETS",
    "DEFAULT_PIPELINE",
    "MAX_STEPS",
    "OPERATIONS",
    "Operation",
    "Pipeline",
    "PipelineError",
    "Preset",
    "PresetError",
    "all_presets",
    "catalogue",
    "load_presets",
    "parse_pipeline",
    "read_presets",
]
