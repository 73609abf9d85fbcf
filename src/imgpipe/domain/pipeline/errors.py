"""The refusal raised for a pipeline that does not parse or validate."""

from __future__ import annotations

from imgpipe.errors import InvalidInput


class PipelineError(InvalidInput):
    """A pipeline that does not parse, does not validate, or names an unknown preset.

    ``reason`` is ``invalid_pipeline`` or ``unknown_preset``; the message names
    the operation, the parameter and what was expected.
    """

    reason = "invalid_pipeline"
    status = 400
