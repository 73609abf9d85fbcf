"""Encoding the final image: format options tuned for small files, metadata policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyvips

from imgpipe.domain.pipeline.output import Format
from imgpipe.imageproc.dither import PALETTE_FIELD
from imgpipe.imageproc.pixels import flatten

_KEEP = {
    "none": pyvips.enums.ForeignKeep.NONE,
    "icc": pyvips.enums.ForeignKeep.ICC,
    "meta": (
        pyvips.enums.ForeignKeep.ICC
        | pyvips.enums.ForeignKeep.EXIF
        | pyvips.enums.ForeignKeep.XMP
        | pyvips.enums.ForeignKeep.IPTC
    ),
}


JPEG_EFFORT: dict[int, dict[str, bool]] = {
    0: {},
    1: {"optimize_coding": True},
    2: {"optimize_coding": True, "trellis_quant": True, "overshoot_deringing": True},
}
"""libjpeg options per JPEG ``effort``: 0 plain libjpeg (fastest, largest), 1 optimised
Huffman tables (the same pixels, smaller), 2 (default) also trellis quantisation and
overshoot deringing (smallest; 6-9 % more CPU for a thumbnail, see docs/benchmarks.md)."""


SavePng = Callable[[pyvips.Image, Mapping[str, object]], bytes]
"""Runs ``image.pngsave_buffer(**options)``; :func:`encode` hands it the encodes that quantise."""


def save_png_here(image: pyvips.Image, options: Mapping[str, object]) -> bytes:
    """:data:`SavePng` in the calling thread."""
    return bytes(image.pngsave_buffer(**options))


def _palette_colours(image: pyvips.Image) -> int | None:
    if image.get_typeof(PALETTE_FIELD):
        return int(image.get(PALETTE_FIELD))
    return None


def encode(image: pyvips.Image, fmt: Format, quantise: SavePng = save_png_here) -> bytes:
    """Write ``image`` in the format ``fmt`` asks for and return the bytes.

    A palette PNG (a dithered image, or ``palette`` asked for) is written by
    ``quantise``: libvips quantises it in one call that no deadline stops, so
    the service runs it where it can be killed.
    """
    keep = _KEEP[fmt.keep]
    colours = _palette_colours(image)
    if fmt.format == "jpeg":
        image = flatten(image, fmt.bg)
        return bytes(
            image.jpegsave_buffer(
                Q=fmt.quality,
                **JPEG_EFFORT[fmt.effort if fmt.effort is not None else 2],
                interlace=fmt.progressive,
                optimize_scans=fmt.progressive,
                keep=keep,
            )
        )
    if fmt.format == "png":
        options: dict[str, object] = {
            "compression": fmt.effort if fmt.effort is not None else 6,
            "interlace": fmt.progressive,
            "keep": keep,
        }
        if colours is not None and image.bands == 1 and colours in (2, 4, 16):
            options["bitdepth"] = {2: 1, 4: 2, 16: 4}[colours]
        elif colours is not None:
            bits = next(b for b in (1, 2, 4, 8) if 1 << b >= colours)
            options.update(palette=True, bitdepth=bits, dither=0.0, Q=100)
        elif fmt.palette:
            options.update(palette=True)
        return (quantise if options.get("palette") else save_png_here)(image, options)
    if fmt.format == "webp":
        return bytes(
            image.webpsave_buffer(
                Q=fmt.quality,
                lossless=fmt.lossless,
                effort=min(fmt.effort if fmt.effort is not None else 4, 6),
                keep=keep,
            )
        )
    if fmt.format == "avif":
        return bytes(
            image.heifsave_buffer(
                Q=fmt.quality,
                lossless=fmt.lossless,
                compression="av1",
                effort=min(fmt.effort if fmt.effort is not None else 4, 9),
                bitdepth=8,
                keep=keep,
            )
        )
    if fmt.format == "tiff":
        return bytes(image.tiffsave_buffer(compression="deflate", predictor="horizontal", keep=keep))
    if fmt.format == "gif":
        options = {"dither": 0.0} if colours is not None else {}
        if colours is not None:
            options["bitdepth"] = max(1, (colours - 1).bit_length())
        image = flatten(image, fmt.bg) if image.hasalpha() and colours is not None else image
        return bytes(
            image.gifsave_buffer(
                effort=max(1, min(fmt.effort if fmt.effort is not None else 7, 10)),
                interlace=fmt.progressive,
                keep=keep,
                **options,
            )
        )
    raise ValueError(f"unknown format {fmt.format}")
