"""Geometry operations over pyvips images: resize, crop, rotate, flip, pad."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyvips

from imgpipe.domain.pipeline import PipelineError
from imgpipe.domain.pipeline.geometry import Crop, Flip, Flop, Pad, Resize, Rotate
from imgpipe.imageproc.errors import TooManyPixels
from imgpipe.imageproc.pixels import background, with_alpha_for

MAX_INTERMEDIATE = 65535
"""Largest side of an intermediate image (a cover scale before its crop)."""

Thumbnailer = Callable[..., pyvips.Image]
"""``thumbnail(width, height=..., size=..., crop=...)`` over a buffer or an image."""

SMART = ("attention", "entropy")

_HORIZONTAL = {"west": 0.0, "northwest": 0.0, "southwest": 0.0,
               "east": 1.0, "northeast": 1.0, "southeast": 1.0}
_VERTICAL = {"north": 0.0, "northeast": 0.0, "northwest": 0.0,
             "south": 1.0, "southeast": 1.0, "southwest": 1.0}


@dataclass(frozen=True)
class ResizePlan:
    """Scale to (scaled_w, scaled_h), then crop or pad to (final_w, final_h)."""

    scaled_w: int
    scaled_h: int
    final_w: int
    final_h: int


def plan_resize(width: int, height: int, op: Resize) -> ResizePlan:
    """Where a resize of a ``width`` x ``height`` image ends up."""
    if op.fit == "fill":
        assert op.w is not None and op.h is not None
        return ResizePlan(op.w, op.h, op.w, op.h)
    sx = op.w / width if op.w else float("inf")
    sy = op.h / height if op.h else float("inf")
    scale = max(sx, sy) if op.fit == "cover" else min(sx, sy)
    if not op.upscale:
        scale = min(scale, 1.0)
    sw, sh = max(1, round(width * scale)), max(1, round(height * scale))
    if max(sw, sh) > MAX_INTERMEDIATE:
        raise TooManyPixels(f"resize: the image would be scaled to {sw}x{sh}")
    if op.fit == "cover":
        return ResizePlan(sw, sh, min(sw, op.w or sw), min(sh, op.h or sh))
    if op.fit == "contain":
        return ResizePlan(sw, sh, op.w or sw, op.h or sh)
    return ResizePlan(sw, sh, sw, sh)


def crop_at(image: pyvips.Image, w: int, h: int, gravity: str) -> pyvips.Image:
    """Crop to ``w`` x ``h`` (at most the image) keeping the part at ``gravity``."""
    w, h = min(w, image.width), min(h, image.height)
    if (w, h) == (image.width, image.height):
        return image
    if gravity in ("attention", "entropy"):
        return image.smartcrop(w, h, interesting=gravity)
    x = round((image.width - w) * _HORIZONTAL.get(gravity, 0.5))
    y = round((image.height - h) * _VERTICAL.get(gravity, 0.5))
    return image.crop(x, y, w, h)


def pad_to(image: pyvips.Image, w: int, h: int, colour: str, gravity: str = "centre") -> pyvips.Image:
    """Place the image on a ``w`` x ``h`` canvas of ``colour``."""
    if (w, h) == (image.width, image.height):
        return image
    image = with_alpha_for(image, colour)
    x = round((w - image.width) * _HORIZONTAL.get(gravity, 0.5))
    y = round((h - image.height) * _VERTICAL.get(gravity, 0.5))
    return image.embed(x, y, w, h, extend="background", background=background(image, colour))


def _exact(image: pyvips.Image, w: int, h: int) -> pyvips.Image:
    if (image.width, image.height) == (w, h):
        return image
    image = image.crop(0, 0, min(w, image.width), min(h, image.height))
    return image.embed(0, 0, w, h, extend="copy")


def resize_with(thumbnail: Thumbnailer, width: int, height: int, op: Resize) -> pyvips.Image:
    """Resize through a libvips thumbnailer (shrink-on-load when it reads a buffer)."""
    plan = plan_resize(width, height, op)
    if op.fit == "cover" and op.gravity in SMART:
        assert op.w is not None and op.h is not None
        size = "both" if op.upscale else "down"
        return thumbnail(op.w, height=op.h, size=size, crop=op.gravity)
    size = "force" if op.fit == "fill" else "both"
    image = thumbnail(plan.scaled_w, height=plan.scaled_h, size=size)
    return _finish(_exact(image, plan.scaled_w, plan.scaled_h), plan, op)


def resize(image: pyvips.Image, op: Resize) -> pyvips.Image:
    """Resize an image already in memory."""
    plan = plan_resize(image.width, image.height, op)
    if op.fit == "cover" and op.gravity in SMART and op.kernel == "lanczos3":
        return resize_with(image.thumbnail_image, image.width, image.height, op)
    if (plan.scaled_w, plan.scaled_h) != (image.width, image.height):
        if op.kernel == "lanczos3":
            size = "force" if op.fit == "fill" else "both"
            image = image.thumbnail_image(plan.scaled_w, height=plan.scaled_h, size=size)
        else:
            image = image.resize(
                plan.scaled_w / image.width,
                vscale=plan.scaled_h / image.height,
                kernel=op.kernel,
            )
        image = _exact(image, plan.scaled_w, plan.scaled_h)
    return _finish(image, plan, op)


def _finish(image: pyvips.Image, plan: ResizePlan, op: Resize) -> pyvips.Image:
    if op.fit == "cover":
        return crop_at(image, plan.final_w, plan.final_h, op.gravity)
    if op.fit == "contain":
        return pad_to(image, plan.final_w, plan.final_h, op.bg)
    return image


def crop(image: pyvips.Image, op: Crop) -> pyvips.Image:
    """An exact rectangle (clipped to the image) or a region at a gravity."""
    if op.x is None or op.y is None:
        return crop_at(image, op.w, op.h, op.gravity)
    if op.x >= image.width or op.y >= image.height:
        raise PipelineError(
            f"crop: x={op.x}, y={op.y} lies outside the {image.width}x{image.height} image",
            operation="crop",
        )
    w, h = min(op.w, image.width - op.x), min(op.h, image.height - op.y)
    return image.crop(op.x, op.y, w, h)


def rotate(image: pyvips.Image, op: Rotate) -> pyvips.Image:
    """Exact rotation for multiples of 90 degrees, interpolated otherwise."""
    if op.angle == 0:
        return image
    if op.angle in (90.0, 180.0, 270.0):
        return image.rot(f"d{int(op.angle)}")
    image = with_alpha_for(image, op.bg)
    return image.rotate(op.angle, background=background(image, op.bg)).cast("uchar")


def flip(image: pyvips.Image, op: Flip) -> pyvips.Image:
    """Mirror top to bottom."""
    return image.flip("vertical")


def flop(image: pyvips.Image, op: Flop) -> pyvips.Image:
    """Mirror left to right."""
    return image.flip("horizontal")


def pad(image: pyvips.Image, op: Pad) -> pyvips.Image:
    """Borders of ``op.bg`` around the image."""
    image = with_alpha_for(image, op.bg)
    w = image.width + op.left + op.right
    h = image.height + op.top + op.bottom
    return image.embed(
        op.left, op.top, w, h, extend="background", background=background(image, op.bg)
    )
