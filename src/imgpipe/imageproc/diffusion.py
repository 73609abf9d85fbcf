"""Floyd-Steinberg error diffusion over raw 8-bit pixels, in Pillow's C code.

Kept free of libvips so that it can run in a separate process: Pillow holds
the GIL while it diffuses, stalling other threads meanwhile. Handing it to a
process pool was tried and did not measurably help (see docs/benchmarks.md),
so by default it runs in the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

Offload = Callable[..., Any]
"""Runs ``fn(*args)`` somewhere (another process) and returns its result."""


def _grey_palette(levels: int) -> Image.Image:
    palette = Image.new("P", (1, 1))
    values: list[int] = []
    for i in range(levels):
        v = round(i * 255 / (levels - 1))
        values += [v, v, v]
    palette.putpalette(values + values[-3:] * (256 - levels))
    return palette


def diffuse(pixels: bytes, width: int, height: int, colors: int, mono: bool) -> bytes:
    """Dither 1-band grey (``mono``) or 3-band RGB pixels to ``colors`` colours.

    Mono gives evenly spaced grey levels (pure black and white for 2); RGB
    gives a median-cut palette of the image. Returns pixels of the same shape.
    """
    fs = Image.Dither.FLOYDSTEINBERG
    if mono:
        source = Image.frombytes("L", (width, height), pixels)
        if colors == 2:
            return source.convert("1", dither=fs).convert("L").tobytes()
        return source.quantize(palette=_grey_palette(colors), dither=fs).convert("L").tobytes()
    source = Image.frombytes("RGB", (width, height), pixels)
    palette = source.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    return source.quantize(palette=palette, dither=fs).convert("RGB").tobytes()


def run_here(fn: Callable[..., Any], *args: Any) -> Any:
    """The default :data:`Offload`: call in the current thread."""
    return fn(*args)
