"""Generated test images (no fixtures files needed)."""

from __future__ import annotations

import pyvips


def image_bytes(width: int = 640, height: int = 480, fmt: str = ".jpg", **options: object) -> bytes:
    """A colourful gradient image of the given size, encoded as ``fmt``."""
    x = pyvips.Image.xyz(width, height)
    r = (x[0] * 255 / max(width - 1, 1))
    g = (x[1] * 255 / max(height - 1, 1))
    b = (r + g) / 2
    image = r.bandjoin([g, b]).cast("uchar").copy(interpretation="srgb")
    data: bytes = image.write_to_buffer(fmt, **options)
    return data
