"""Floyd-Steinberg dithering: 1-bit, N grey levels, or an N-colour palette.

libvips has no error-diffusion operation, so the diffusion itself runs in
Pillow's C code over raw pixels handed across in memory (Pillow decodes
nothing here: it never sees the input bytes).
"""

from __future__ import annotations

import pyvips
from PIL import Image

from imgpipe.core.pipeline.tone import Dither
from imgpipe.imageproc.pixels import flatten

PALETTE_FIELD = "imgpipe-palette-colours"
"""Image metadata telling the encoder the image already has at most N colours."""


def _grey_palette(levels: int) -> Image.Image:
    palette = Image.new("P", (1, 1))
    values: list[int] = []
    for i in range(levels):
        v = round(i * 255 / (levels - 1))
        values += [v, v, v]
    palette.putpalette(values + values[-3:] * (256 - levels))
    return palette


def dither(image: pyvips.Image, op: Dither) -> pyvips.Image:
    """Reduce ``image`` to ``op.colors`` colours with error diffusion."""
    image = flatten(image, "ffffff")
    size = (image.width, image.height)
    if op.mono:
        grey = image.colourspace("b-w") if image.bands != 1 else image
        source = Image.frombytes("L", size, grey.write_to_memory())
        if op.colors == 2:
            result = source.convert("1", dither=Image.Dither.FLOYDSTEINBERG).convert("L")
        else:
            result = source.quantize(
                palette=_grey_palette(op.colors), dither=Image.Dither.FLOYDSTEINBERG
            ).convert("L")
        out = pyvips.Image.new_from_memory(result.tobytes(), size[0], size[1], 1, "uchar")
        out = out.copy(interpretation="b-w")
    else:
        rgb = image.colourspace("srgb") if image.bands != 3 else image
        source = Image.frombytes("RGB", size, rgb.write_to_memory())
        palette = source.quantize(colors=op.colors, method=Image.Quantize.MEDIANCUT)
        result = source.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        data = result.convert("RGB").tobytes()
        out = pyvips.Image.new_from_memory(data, size[0], size[1], 3, "uchar")
        out = out.copy(interpretation="srgb")
    out = out.copy()
    out.set_type(pyvips.GValue.gint_type, PALETTE_FIELD, op.colors)
    return out
