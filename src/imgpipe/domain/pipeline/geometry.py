"""Geometry operations: resize, crop, rotate, flip, flop, pad."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from imgpipe.domain.pipeline.base import Operation, register
from imgpipe.domain.pipeline.types import MAX_DIMENSION, Colour, lowered

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


@register
class Crop(Operation):
    """Cut out a rectangle.

    With ``x`` and ``y`` the rectangle is exact (clipped to the image);
    without them a ``w`` x ``h`` region is kept at ``gravity``, where
    ``attention`` and ``entropy`` pick the most interesting region.
    """

    name: ClassVar[str] = "crop"
    aliases: ClassVar[dict[str, str]] = {"width": "w", "height": "h", "left": "x", "top": "y"}

    w: Dimension = Field(description="Width of the region.")
    h: Dimension = Field(description="Height of the region.")
    x: int | None = Field(default=None, ge=0, le=MAX_DIMENSION * 4, description="Left edge.")
    y: int | None = Field(default=None, ge=0, le=MAX_DIMENSION * 4, description="Top edge.")
    gravity: Gravity = Field(default="centre", description="Region kept when x, y are not given.")

    @model_validator(mode="after")
    def _corner(self) -> Crop:
        if (self.x is None) != (self.y is None):
            raise ValueError("x and y: give both or neither")
        if self.x is not None and self.gravity != "centre":
            raise ValueError("gravity: not used when x and y are given")
        return self


@register
class Rotate(Operation):
    """Rotate clockwise by ``angle`` degrees; other than multiples of 90 the corners get ``bg``."""

    name: ClassVar[str] = "rotate"
    main: ClassVar[str | None] = "angle"
    aliases: ClassVar[dict[str, str]] = {"background": "bg", "a": "angle"}

    angle: float = Field(ge=-360, le=360, description="Degrees clockwise.")
    bg: Colour = Field(default="ffffff", description="Colour of uncovered corners.")

    @model_validator(mode="before")
    @classmethod
    def _normalise_angle(cls, data: object) -> object:
        if isinstance(data, dict) and "angle" in data:
            try:
                angle = float(data["angle"]) % 360.0
            except (TypeError, ValueError):
                return data
            angle = 0.0 if angle == 360.0 else angle
            return {**data, "angle": angle}
        return data


@register
class Flip(Operation):
    """Mirror top to bottom."""

    name: ClassVar[str] = "flip"


@register
class Flop(Operation):
    """Mirror left to right."""

    name: ClassVar[str] = "flop"


@register
class Pad(Operation):
    """Add borders of ``bg`` colour (pixels per edge)."""

    name: ClassVar[str] = "pad"
    aliases: ClassVar[dict[str, str]] = {"t": "top", "r": "right", "b": "bottom", "l": "left", "background": "bg"}

    top: int = Field(default=0, ge=0, le=MAX_DIMENSION, description="Pixels above.")
    right: int = Field(default=0, ge=0, le=MAX_DIMENSION, description="Pixels to the right.")
    bottom: int = Field(default=0, ge=0, le=MAX_DIMENSION, description="Pixels below.")
    left: int = Field(default=0, ge=0, le=MAX_DIMENSION, description="Pixels to the left.")
    bg: Colour = Field(default="ffffff", description="Border colour (rrggbbaa for transparency).")
