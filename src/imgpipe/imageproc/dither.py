"""Floyd-Steinberg dithering: 1-bit, N grey levels, or an N-colour palette.

libvips has no error-diffusion operation, so the diffusion itself runs in
Pillow's C code over raw pixels handed across in memory (Pillow decodes
nothing here: it never sees the input bytes); see
:mod:`imgpipe.imageproc.diffusion`. Where it runs (this thread, or a helper
process that is killed at the deadline) is the caller's
:class:`~imgpipe.imageproc.diffusers.Diffuser`, as is where the palette PNG
encode of the result runs (:func:`imgpipe.imageproc.encode.encode`).
"""

from __future__ import annotations

import pyvips

from imgpipe.domain.pipeline.tone import Dither
from imgpipe.imageproc.diffusers import IN_THREAD, Diffuser
from imgpipe.imageproc.pixels import flatten

PALETTE_FIELD = "imgpipe-palette-colours"
"""Image metadata telling the encoder the image already has at most N colours."""


def dither(
    image: pyvips.Image,
    op: Dither,
    diffuser: Diffuser = IN_THREAD,
    deadline: float | None = None,
) -> pyvips.Image:
    """Reduce ``image`` to ``op.colors`` colours with error diffusion."""
    image = flatten(image, "ffffff")
    if op.mono:
        source = image.colourspace("b-w") if image.bands != 1 else image
    else:
        source = image.colourspace("srgb") if image.bands != 3 else image
    pixels = bytes(source.write_to_memory())
    result = diffuser.diffuse(pixels, image.width, image.height, op.colors, op.mono, deadline)
    bands = 1 if op.mono else 3
    out = pyvips.Image.new_from_memory(result, image.width, image.height, bands, "uchar")
    out = out.copy(interpretation="b-w" if op.mono else "srgb")
    out.set_type(pyvips.GValue.gint_type, PALETTE_FIELD, op.colors)
    return out
