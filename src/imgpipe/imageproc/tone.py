"""Tone operations over pyvips images: blur, sharpen, grayscale, levels, pixelate."""

from __future__ import annotations

from collections.abc import Callable

import pyvips

from imgpipe.domain.pipeline.tone import (
    Blur,
    Brightness,
    Contrast,
    Flatten,
    Gamma,
    Grayscale,
    Pixelate,
    Sharpen,
)
from imgpipe.imageproc.pixels import flatten as flatten_over


def on_colour(image: pyvips.Image, change: Callable[[pyvips.Image], pyvips.Image]) -> pyvips.Image:
    """Apply ``change`` to the colour bands only, keeping alpha untouched."""
    if not image.hasalpha():
        return change(image).cast("uchar")
    colour, alpha = image.extract_band(0, n=image.bands - 1), image.extract_band(image.bands - 1)
    return change(colour).cast("uchar").bandjoin(alpha)


def blur(image: pyvips.Image, op: Blur) -> pyvips.Image:
    """Gaussian blur of every band."""
    return image.gaussblur(op.sigma).cast("uchar")


def sharpen(image: pyvips.Image, op: Sharpen) -> pyvips.Image:
    """libvips ``sharpen`` (works on lightness, keeps colour)."""
    out = image.sharpen(sigma=op.sigma, m1=op.flat, m2=op.jagged)
    return out.colourspace(image.interpretation).cast("uchar")


def grayscale(image: pyvips.Image, op: Grayscale) -> pyvips.Image:
    """Shades of grey, alpha kept."""
    return image.colourspace("b-w")


def brightness(image: pyvips.Image, op: Brightness) -> pyvips.Image:
    """Every colour value times ``factor``, clipped to 0-255."""
    return on_colour(image, lambda c: c.linear(op.factor, 0.0))


def contrast(image: pyvips.Image, op: Contrast) -> pyvips.Image:
    """Distances from mid-grey (128) times ``factor``, clipped to 0-255."""
    return on_colour(image, lambda c: c.linear(op.factor, 128.0 * (1.0 - op.factor)))


def gamma(image: pyvips.Image, op: Gamma) -> pyvips.Image:
    """``255 * (v / 255) ** (1 / exponent)`` for every colour value."""
    return on_colour(image, lambda c: c.gamma(exponent=op.exponent))


def pixelate(image: pyvips.Image, op: Pixelate) -> pyvips.Image:
    """Average ``size`` x ``size`` blocks and blow them back up."""
    size = min(op.size, image.width, image.height)
    if size < 2:
        return image
    small = image.shrink(size, size).cast("uchar")
    big = small.zoom(size, size)
    big = big.crop(0, 0, min(big.width, image.width), min(big.height, image.height))
    return big.embed(0, 0, image.width, image.height, extend="copy")


def flatten(image: pyvips.Image, op: Flatten) -> pyvips.Image:
    """Composite over ``bg``, dropping alpha."""
    return flatten_over(image, op.bg)
