"""Floyd-Steinberg error diffusion over raw 8-bit pixels, in Pillow's C code.

Pillow holds the GIL while it diffuses and cannot be interrupted, so
imageproc runs :func:`diffuse` in helper processes
(:mod:`imgpipe.imageproc.diffusers`): ``python -m imgpipe.imageproc.diffusion``
is one helper, reading requests on stdin and answering on stdout. This module
imports neither libvips nor aiohttp, so a helper starts small.

Wire format, one request at a time: the pixels are in a shared memory file
(``memfd``) the caller passes at start as the one argument (its descriptor);
stdin carries :data:`REQUEST` (width, height, colours, mono, pixel byte
count), stdout :data:`ANSWER` (0 for pixels, 1 for an error message, then the
byte count), and the answer's bytes replace the pixels in the memory file.
Only these few bytes cross the pipes, so a request costs two wake-ups however
large the image (through a pipe, megabytes take one per 64 KB).
"""

from __future__ import annotations

import os
import struct
import sys
from typing import BinaryIO

from PIL import Image

REQUEST = struct.Struct("<IIHBQ")
ANSWER = struct.Struct("<BQ")


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
    Deterministic: the same pixels and Pillow version give the same bytes.
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


def read_memory(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of the memory file ``fd``."""
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        part = os.pread(fd, size - offset, offset)
        if not part:
            raise EOFError(f"memory file holds {offset} bytes, {size} expected")
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def write_memory(fd: int, data: bytes) -> None:
    """Make the memory file ``fd`` hold exactly ``data``."""
    os.ftruncate(fd, len(data))
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)


def serve(requests: BinaryIO, answers: BinaryIO, memory: int) -> None:
    """Answer diffusion requests until ``requests`` ends (the helper's main loop)."""
    while header := requests.read(REQUEST.size):
        width, height, colors, mono, size = REQUEST.unpack(header)
        try:
            pixels = read_memory(memory, size)
            out, status = diffuse(pixels, width, height, colors, bool(mono)), 0
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who raises it
            out, status = f"{type(exc).__name__}: {exc}".encode(), 1
        write_memory(memory, out)
        answers.write(ANSWER.pack(status, len(out)))
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer, int(sys.argv[1]))
