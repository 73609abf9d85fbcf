"""The quantising PNG encode as a job a helper process can run.

libvips quantises a palette PNG (``pngsave`` with ``palette``) in one call
that reports no progress, so a deadline cannot stop it in the worker thread.
:func:`describe` turns the image into what that encode reads (its pixels, its
header and its metadata) and :func:`save` rebuilds the same image in a helper
and runs the same ``pngsave``: the same libvips gives the same bytes.

Metadata of plain types crosses (numbers, strings, blobs, arrays of numbers),
in the order libvips lists it (but EXIF, which :func:`save` sets first); for an
image with metadata of another type, or a string that is not UTF-8,
:func:`describe` returns None and the caller encodes it where it is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyvips

_HEADER = frozenset(
    {"width", "height", "bands", "format", "coding", "interpretation",
     "xoffset", "yoffset", "xres", "yres", "filename"}
)
"""Fields of every image's header, carried by :func:`_header` (the file name is not saved)."""

_HIDDEN = ("ipct-data", "gif-delay", "gif-loop", "palette-bit-depth", "heif-bitdepth")
"""Deprecated fields libvips keeps but does not list (``vips_image_map`` hides them)."""

_EXIF = "exif-data"
"""Setting this field makes libvips parse it into fields and the resolution."""

_BLOB = "VipsBlob"
_PLAIN = frozenset(
    {"gboolean", "gint", "guint64", "gdouble", "gchararray", "VipsRefString",
     "VipsArrayInt", "VipsArrayDouble"}
)
"""Metadata types whose Python values JSON carries unchanged."""


@dataclass(frozen=True)
class PngJob:
    """An image to encode as a palette PNG: a JSON description and the pixels."""

    description: bytes
    pixels: bytes


def _header(image: pyvips.Image) -> dict[str, Any]:
    return {
        "width": image.width,
        "height": image.height,
        "bands": image.bands,
        "format": image.format,
        "interpretation": image.interpretation,
        "xres": image.xres,
        "yres": image.yres,
        "xoffset": image.xoffset,
        "yoffset": image.yoffset,
    }


def describe(image: pyvips.Image, options: Mapping[str, object]) -> PngJob | None:
    """``image`` and the ``pngsave`` ``options`` as a job; None when it cannot cross.

    Computes the image's pixels (a libvips evaluation, stopped by the
    deadline's kill like any other).
    """
    if image.coding != "none":
        return None
    fields: list[list[Any]] = []
    names = [n for n in image.get_fields() if n not in _HEADER]
    for name in names + [n for n in _HIDDEN if image.get_typeof(n) and n not in names]:
        kind = pyvips.type_name(image.get_typeof(name))
        if kind == _BLOB:
            fields.append([name, kind, base64.b64encode(image.get(name)).decode("ascii")])
        elif kind in _PLAIN:
            value = image.get(name)
            if isinstance(value, str) and "\ufffd" in value:
                return None  # pyvips replaced bytes that are not UTF-8: they would not cross
            fields.append([name, kind, value])
        else:
            return None
    description = {
        "header": _header(image),
        "fields": fields,
        "options": dict(options),
        "threads": pyvips.concurrency_get(),
    }
    return PngJob(json.dumps(description).encode(), bytes(image.write_to_memory()))


_configured = False


def _configure() -> None:
    """libvips in a helper: no operation cache and no loaders (it never reads a file)."""
    global _configured
    if not _configured:
        pyvips.cache_set_max(0)
        pyvips.cache_set_max_mem(0)
        pyvips.cache_set_max_files(0)
        pyvips.operation_block_set("VipsForeignLoad", True)
        _configured = True


def save(description: bytes, pixels: bytes) -> bytes:
    """The PNG bytes of a job made by :func:`describe` (what runs in a helper)."""
    _configure()
    job = json.loads(description)
    pyvips.concurrency_set(job["threads"])  # as many threads as the worker's libvips
    header = job["header"]
    image = pyvips.Image.new_from_memory(
        pixels, header["width"], header["height"], header["bands"], header["format"]
    ).copy()
    fields = [
        (name, pyvips.type_from_name(kind), base64.b64decode(value) if kind == _BLOB else value)
        for name, kind, value in job["fields"]
    ]
    # EXIF first: libvips parses it into fields, which are then replaced by the image's own.
    for name, gtype, value in fields:
        if name == _EXIF:
            image.set_type(gtype, name, value)
            for parsed in image.get_fields():
                if parsed not in _HEADER and parsed != _EXIF:
                    image.remove(parsed)
    for name, gtype, value in fields:
        if name != _EXIF:
            image.set_type(gtype, name, value)
    image = image.copy(  # the header last: parsing EXIF sets the resolution
        interpretation=header["interpretation"],
        xres=header["xres"],
        yres=header["yres"],
        xoffset=header["xoffset"],
        yoffset=header["yoffset"],
    )
    return bytes(image.pngsave_buffer(**job["options"]))
