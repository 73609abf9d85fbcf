"""Small helpers over pyvips images: colour spaces, alpha, backgrounds."""

from __future__ import annotations

import pyvips

from imgpipe.domain.pipeline.types import colour_rgba

ICC_FIELD = "icc-profile-data"


def to_srgb_profile(image: pyvips.Image) -> pyvips.Image:
    """Convert through the embedded ICC profile to sRGB and drop the profile.

    Used when the profile will not be kept: stripping a wide-gamut or CMYK
    profile without converting would change the colours. A profile libvips
    cannot use is dropped and the pixels are taken as they are.
    """
    if not image.get_typeof(ICC_FIELD):
        return image
    try:
        converted = image.icc_transform("srgb", embedded=True, intent="perceptual")
        converted = converted.copy()
    except pyvips.Error:
        converted = image.copy()
    converted.remove(ICC_FIELD)
    return converted


def normalise(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB or 8-bit grey, with or without alpha: what every operation expects."""
    if image.interpretation not in ("srgb", "b-w"):
        grey = image.bands - (1 if image.hasalpha() else 0) == 1
        image = image.colourspace("b-w" if grey else "srgb")
    if image.format != "uchar":
        target = "b-w" if image.bands - (1 if image.hasalpha() else 0) == 1 else "srgb"
        if image.interpretation in ("grey16", "rgb16") or image.format == "ushort":
            image = image.colourspace(target)
        if image.format != "uchar":
            image = image.cast("uchar")
    return image


def background(image: pyvips.Image, colour: str) -> list[float]:
    """``colour`` as a pixel value matching the bands of ``image``."""
    r, g, b, a = colour_rgba(colour)
    colour_bands = image.bands - (1 if image.hasalpha() else 0)
    values: list[float] = [0.299 * r + 0.587 * g + 0.114 * b] if colour_bands == 1 else [r, g, b]
    if image.hasalpha():
        values.append(a)
    return values


def with_alpha_for(image: pyvips.Image, colour: str) -> pyvips.Image:
    """Add an opaque alpha band when ``colour`` is translucent and the image has none."""
    if colour_rgba(colour)[3] < 255 and not image.hasalpha():
        return image.addalpha()
    return image


def flatten(image: pyvips.Image, colour: str) -> pyvips.Image:
    """Composite the image over ``colour``, dropping its alpha band."""
    if not image.hasalpha():
        return image
    r, g, b, _ = colour_rgba(colour)
    grey = image.bands == 2
    bg: list[float] = [0.299 * r + 0.587 * g + 0.114 * b] if grey else [r, g, b]
    return image.flatten(background=bg).cast("uchar")
