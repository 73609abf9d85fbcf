"""Tone and colour operations: dither, grayscale, blur, sharpen, brightness, ..."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from imgpipe.core.pipeline.base import Operation, register


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
