"""Watermarks: text rendered by libvips, or a configured overlay image."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import pyvips

from imgpipe.domain.pipeline import PipelineError
from imgpipe.domain.pipeline.overlay import OVERLAY_NAME, Watermark
from imgpipe.domain.pipeline.types import colour_rgba
from imgpipe.imageproc.geometry import _HORIZONTAL, _VERTICAL
from imgpipe.imageproc.pixels import normalise

OVERLAY_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".avif")


def load_overlays(directory: str | None) -> dict[str, bytes]:
    """Overlay images by name (file stem) from ``directory``; empty when unset."""
    if not directory:
        return {}
    found: dict[str, bytes] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix.lower() in OVERLAY_SUFFIXES and OVERLAY_NAME.fullmatch(path.stem.lower()):
            found[path.stem.lower()] = path.read_bytes()
    return found


def _text_overlay(op: Watermark) -> pyvips.Image:
    assert op.text is not None
    mask = pyvips.Image.text(html.escape(op.text), font=f"sans {op.size}", dpi=72)
    r, g, b, a = colour_rgba(op.colour)
    colour = mask.new_from_image([r, g, b]).copy(interpretation="srgb")
    return colour.bandjoin(mask.linear(a / 255.0 * op.opacity, 0.0).cast("uchar"))


def _image_overlay(op: Watermark, overlays: Mapping[str, bytes]) -> pyvips.Image:
    assert op.image is not None
    data = overlays.get(op.image)
    if data is None:
        known = ", ".join(sorted(overlays)) or "none configured"
        raise PipelineError(
            f"watermark: unknown overlay image {op.image!r} (known: {known})",
            operation="watermark",
            parameter="image",
        )
    mark = normalise(pyvips.Image.new_from_buffer(data, "", access="random"))
    if op.width is not None and op.width != mark.width:
        mark = mark.thumbnail_image(op.width, height=100_000, size="both")
    if mark.bands < 3:
        mark = mark.colourspace("srgb")
    if not mark.hasalpha():
        mark = mark.addalpha()
    colour, alpha = mark.extract_band(0, n=3), mark.extract_band(3)
    return colour.bandjoin(alpha.linear(op.opacity, 0.0).cast("uchar"))


def watermark(
    image: pyvips.Image, op: Watermark, overlays: Mapping[str, bytes] | None = None
) -> pyvips.Image:
    """Lay the text or image overlay over ``image`` at ``op.gravity``."""
    mark = _text_overlay(op) if op.text is not None else _image_overlay(op, overlays or {})
    room_w = max(image.width - mark.width - 2 * op.margin, 0)
    room_h = max(image.height - mark.height - 2 * op.margin, 0)
    x = op.margin + round(room_w * _HORIZONTAL.get(op.gravity, 0.5))
    y = op.margin + round(room_h * _VERTICAL.get(op.gravity, 0.5))
    had_alpha, grey = image.hasalpha(), image.interpretation == "b-w"
    base = image.colourspace("srgb") if grey else image
    out = base.composite2(mark, "over", x=x, y=y).cast("uchar")
    if not had_alpha:
        out = out.extract_band(0, n=3)
    return out.colourspace("b-w") if grey else out
