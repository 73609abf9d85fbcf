"""Floyd-Steinberg error diffusion over raw 8-bit pixels, in Pillow's C code,
and the helper process that runs it.

Pillow holds the GIL while it diffuses and cannot be interrupted, so
imageproc runs :func:`diffuse` in helper processes
(:mod:`imgpipe.imageproc.diffusers`): ``python -m imgpipe.imageproc.diffusion``
is one helper, reading jobs on stdin and answering on stdout. A helper also
runs the quantising PNG encode that follows a ``dither``
(:mod:`imgpipe.imageproc.pngjob`), the other call that cannot be stopped.
This module imports neither libvips nor aiohttp, so a helper starts small;
libvips is loaded by the first encode job.

Wire format, one job at a time: the job's data are in a shared memory file
(``memfd``) the caller passes at start as the one argument (its descriptor);
stdin carries the job's kind (:data:`KIND`) and then its request
(:data:`REQUESTS`): for :data:`DIFFUSE` width, height, colours, mono and the
pixel byte count; for :data:`ENCODE_PNG` the byte counts of the description
and of the pixels after it. stdout carries :data:`ANSWER` (0 for the result,
1 for an error message, then the byte count), and the answer's bytes replace
the job's data in the memory file. Only these few bytes cross the pipes, so
a job costs two wake-ups however large the image (through a pipe, megabytes
take one per 64 KB).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable
from typing import BinaryIO

from PIL import Image

DIFFUSE = 0
ENCODE_PNG = 1
KIND = struct.Struct("<B")
REQUESTS = {DIFFUSE: struct.Struct("<IIHBQ"), ENCODE_PNG: struct.Struct("<QQ")}
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


def read_memory(fd: int, size: int, start: int = 0) -> bytes:
    """``size`` bytes of the memory file ``fd`` from ``start`` on."""
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        part = os.pread(fd, size - offset, start + offset)
        if not part:
            raise EOFError(f"memory file holds {offset} bytes, {size} expected")
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def write_memory(fd: int, *parts: bytes) -> None:
    """Make the memory file ``fd`` hold exactly ``parts``, one after the other."""
    os.ftruncate(fd, sum(len(part) for part in parts))
    offset = 0
    for part in parts:
        view = memoryview(part)
        written = 0
        while written < len(part):
            written += os.pwrite(fd, view[written:], offset + written)
        offset += written


def _diffuse_job(memory: int, width: int, height: int, colors: int, mono: int, size: int) -> bytes:
    return diffuse(read_memory(memory, size), width, height, colors, bool(mono))


def _encode_png_job(memory: int, described: int, size: int) -> bytes:
    from imgpipe.imageproc import pngjob  # libvips, loaded by the first encode only

    return pngjob.save(read_memory(memory, described), read_memory(memory, size, described))


_JOBS: dict[int, Callable[..., bytes]] = {DIFFUSE: _diffuse_job, ENCODE_PNG: _encode_png_job}


def serve(requests: BinaryIO, answers: BinaryIO, memory: int) -> None:
    """Answer jobs until ``requests`` ends (the helper's main loop)."""
    while kind := requests.read(KIND.size):
        (job,) = KIND.unpack(kind)
        request = REQUESTS[job]
        fields = request.unpack(requests.read(request.size))
        try:
            out, status = _JOBS[job](memory, *fields), 0
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who raises it
            out, status = f"{type(exc).__name__}: {exc}".encode(), 1
        write_memory(memory, out)
        answers.write(ANSWER.pack(status, len(out)))
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer, int(sys.argv[1]))
