"""Tone operations over pyvips images: blur, sharpen, grayscale, levels."""

from __future__ import annotations

import pyvips

from imgpipe.core.pipeline.tone import Blur, Grayscale, Sharpen


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
