"""Untrusted-input rules: loader allowlist, cache off, size and pixel limits.

:func:`configure_vips` changes process-wide libvips state; services call it
from their setup, never at import time. :func:`probe` reads only the header of
an input and refuses it before any pixel is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from imgpipe.imageproc.errors import CorruptImage, TooLarge, TooManyPixels, UnsupportedFormat

LOADERS: dict[str, str] = {
    "jpeg": "VipsForeignLoadJpegBuffer",
    "png": "VipsForeignLoadPngBuffer",
    "webp": "VipsForeignLoadWebpBuffer",
    "avif": "VipsForeignLoadHeifBuffer",
    "tiff": "VipsForeignLoadTiffBuffer",
    "gif": "VipsForeignLoadNsgifBuffer",
}
"""Input formats imgpipe can allow, and the libvips in-memory loader of each.

Every other loader (files, sources, SVG, CSV, matrix, raw, vips, Ultra HDR)
stays blocked."""

_FORMAT_OF_LOADER = {
    "jpegload": "jpeg",
    "pngload": "png",
    "webpload": "webp",
    "heifload": "avif",
    "tiffload": "tiff",
    "gifload": "gif",
}
FAIL_ON = "truncated"
"""libvips ``fail_on`` level: truncated or corrupt data raises instead of rendering grey."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the engine."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_frames: int = 1000
    max_output_dimension: int = 16384
    formats: frozenset[str] = frozenset(LOADERS)


@dataclass(frozen=True)
class Probe:
    """What the header says about an input, read before decoding."""

    format: str
    width: int
    height: int
    pages: int
    orientation: int
    has_profile: bool = False

    @property
    def upright_size(self) -> tuple[int, int]:
        """Width and height after EXIF auto-orientation."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def configure_vips(formats: frozenset[str] | None = None, threads: int | None = None) -> None:
    """Turn the libvips operation cache off and allow only the wanted loaders.

    ``threads`` sets how many threads libvips uses per image (left as it is
    when None). Idempotent; affects the whole process.
    """
    if threads is not None:
        pyvips.concurrency_set(threads)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for name in formats if formats is not None else frozenset(LOADERS):
        pyvips.operation_block_set(LOADERS[name], False)


def _first_line(exc: pyvips.Error) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "libvips error"


def probe(data: bytes, limits: Limits) -> Probe:
    """Read the header of ``data`` and refuse it if it breaks a limit.

    Raises :class:`UnsupportedFormat`, :class:`TooLarge`,
    :class:`TooManyPixels` or :class:`CorruptImage`.
    """
    if not data:
        raise UnsupportedFormat("empty input: expected image bytes")
    if len(data) > limits.max_bytes:
        raise TooLarge(
            f"input has {len(data)} bytes, at most {limits.max_bytes} allowed",
            max_bytes=limits.max_bytes,
        )
    try:
        image = pyvips.Image.new_from_buffer(data, "", fail_on=FAIL_ON)
    except pyvips.Error as exc:
        message = _first_line(exc)
        if "not in a known format" in message:
            allowed = ", ".join(sorted(limits.formats))
            raise UnsupportedFormat(
                f"input is not an image in an allowed format ({allowed})"
            ) from None
        raise CorruptImage(f"input header does not decode: {message}") from None
    loader = str(image.get("vips-loader")).removesuffix("_buffer")
    fmt = _FORMAT_OF_LOADER.get(loader)
    heif = str(image.get("heif-compression")) if image.get_typeof("heif-compression") else None
    if fmt == "avif" and heif not in (None, "av1"):
        fmt = "heic"
    if fmt is None or fmt not in limits.formats:
        raise UnsupportedFormat(f"input format {loader!r} is not allowed")
    pages = int(image.get("n-pages")) if image.get_typeof("n-pages") else 1
    orientation = int(image.get("orientation")) if image.get_typeof("orientation") else 1
    has_profile = bool(image.get_typeof("icc-profile-data"))
    info = Probe(fmt, image.width, image.height, pages, orientation, has_profile)
    if image.width * image.height > limits.max_pixels:
        raise TooManyPixels(
            f"input is {image.width}x{image.height} pixels, at most {limits.max_pixels} allowed",
            max_pixels=limits.max_pixels,
        )
    if pages > limits.max_frames:
        raise TooManyPixels(
            f"input has {pages} frames, at most {limits.max_frames} allowed",
            max_frames=limits.max_frames,
        )
    return info


def check_output(image: pyvips.Image, limits: Limits) -> None:
    """Refuse an output larger than the limits before computing it."""
    largest = max(image.width, image.height)
    if largest > limits.max_output_dimension:
        raise TooManyPixels(
            f"output would be {image.width}x{image.height}, at most "
            f"{limits.max_output_dimension} pixels per side allowed"
        )
    if image.width * image.height > limits.max_pixels:
        raise TooManyPixels(
            f"output would be {image.width}x{image.height} pixels, "
            f"at most {limits.max_pixels} allowed"
        )
