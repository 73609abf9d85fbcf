"""Geometry operations: resize, crop, rotate, flip, flop, pad."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from imgpipe.core.pipeline.base import Operation, register
from imgpipe.core.pipeline.types import MAX_DIMENSION, Colour, lowered

Gravity = Annotated[
    Literal[
        "centre", "north", "south", "east", "west",
        "northeast", "northwest", "southeast", "southwest",
        "attention", "entropy",
    ],
    lowered(
        {
            "center": "centre", "c": "centre", "n": "north", "s": "south", "e": "east",
            "w": "west", "ne": "northeast", "nw": "northwest", "se": "southeast",
            "sw": "southwest", "smart": "attention",
        }
    ),
]
Dimension = Annotated[int, Field(ge=1, le=MAX_DIMENSION)]


@register
class Resize(Operation):
    """Scale to a width and/or height.

    ``fit`` decides how the box ``w`` x ``h`` is met: ``inside`` keeps the
    aspect ratio within the box (default), ``cover`` fills the box and crops
    the overflow at ``gravity``, ``contain`` fits inside and pads with ``bg``
    to exactly the box, ``fill`` stretches to exactly the box. Images are not
    enlarged unless ``upscale`` is true.
    """

    name: ClassVar[str] = "resize"
    aliases: ClassVar[dict[str, str]] = {"width": "w", "height": "h", "background": "bg"}

    w: Dimension | None = Field(default=None, description="Target width in pixels.")
    h: Dimension | None = Field(default=None, description="Target height in pixels.")
    fit: Annotated[
        Literal["inside", "cover", "contain", "fill"],
        lowered({"crop": "cover", "pad": "contain", "force": "fill", "stretch": "fill"}),
    ] = Field(default="inside", description="How the image meets the w x h box.")
    gravity: Gravity = Field(default="centre", description="Where cover crops keep the image.")
    upscale: bool = Field(default=False, description="Allow enlarging smaller images.")
    kernel: Annotated[
        Literal["nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3"], lowered()
    ] = Field(default="lanczos3", description="Resampling kernel.")
    bg: Colour = Field(default="ffffff", description="Padding colour for fit=contain.")

    @model_validator(mode="after")
    def _box(self) -> Resize:
        if self.w is None and self.h is None:
            raise ValueError("w or h: give a width, a height, or both")
        if self.fit != "inside" and (self.w is None or self.h is None):
            raise ValueError(f"w and h: fit={self.fit} needs both a width and a height")
        return self
