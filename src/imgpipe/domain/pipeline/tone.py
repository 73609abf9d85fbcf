"""Tone and colour operations: dither, grayscale, blur, sharpen, brightness, ..."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from imgpipe.domain.pipeline.base import Operation, register
from imgpipe.domain.pipeline.types import Colour


@register
class Dither(Operation):
    """Reduce colours with Floyd-Steinberg error diffusion.

    By default 1-bit black and white (``colors=2``, ``mono=true``). With
    ``mono=true`` the levels are evenly spaced greys; with ``mono=false`` a
    palette of ``colors`` colours is chosen from the image.
    """

    name: ClassVar[str] = "dither"
    main: ClassVar[str | None] = "colors"
    aliases: ClassVar[dict[str, str]] = {"colours": "colors", "n": "colors"}

    colors: int = Field(default=2, ge=2, le=256, description="Number of output colours.")
    mono: bool = Field(default=True, description="Grey levels (true) or an image palette (false).")


@register
class Blur(Operation):
    """Gaussian blur."""

    name: ClassVar[str] = "blur"
    main: ClassVar[str | None] = "sigma"

    sigma: float = Field(default=1.0, ge=0.1, le=100, description="Standard deviation in pixels.")


@register
class Sharpen(Operation):
    """Unsharp-mask sharpening of lightness (libvips ``sharpen``)."""

    name: ClassVar[str] = "sharpen"
    main: ClassVar[str | None] = "sigma"

    sigma: float = Field(default=1.0, ge=0.1, le=10, description="Radius of the mask in pixels.")
    flat: float = Field(default=0.0, ge=0, le=10, description="Sharpening of flat areas (m1).")
    jagged: float = Field(default=3.0, ge=0, le=20, description="Sharpening of edges (m2).")


@register
class Grayscale(Operation):
    """Convert to shades of grey (alpha is kept)."""

    name: ClassVar[str] = "grayscale"
    aliases: ClassVar[dict[str, str]] = {}


@register
class Brightness(Operation):
    """Multiply brightness by ``factor`` (1 leaves the image unchanged)."""

    name: ClassVar[str] = "brightness"
    main: ClassVar[str | None] = "factor"

    factor: float = Field(ge=0, le=10, description="Brightness multiplier.")


@register
class Contrast(Operation):
    """Scale contrast around mid-grey by ``factor`` (1 leaves the image unchanged)."""

    name: ClassVar[str] = "contrast"
    main: ClassVar[str | None] = "factor"

    factor: float = Field(ge=0, le=10, description="Contrast multiplier.")


@register
class Gamma(Operation):
    """Gamma correction: values scale as ``in ** (1 / exponent)``; above 1 brightens."""

    name: ClassVar[str] = "gamma"
    main: ClassVar[str | None] = "exponent"

    exponent: float = Field(default=2.2, ge=0.1, le=10, description="Gamma exponent.")


@register
class Pixelate(Operation):
    """Blocks of ``size`` x ``size`` pixels of their average colour."""

    name: ClassVar[str] = "pixelate"
    main: ClassVar[str | None] = "size"

    size: int = Field(default=8, ge=2, le=1024, description="Block size in pixels.")


@register
class Flatten(Operation):
    """Remove transparency by compositing over ``bg``."""

    name: ClassVar[str] = "flatten"
    main: ClassVar[str | None] = "bg"
    aliases: ClassVar[dict[str, str]] = {"background": "bg"}

    bg: Colour = Field(default="ffffff", description="Background colour.")
