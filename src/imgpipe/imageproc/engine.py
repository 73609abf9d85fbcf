"""The image engine: bytes plus a pipeline in, encoded bytes out. No I/O, no HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyvips

from imgpipe.core.pipeline import Operation, Pipeline
from imgpipe.core.pipeline.geometry import Resize
from imgpipe.core.pipeline.tone import Blur, Dither, Grayscale, Sharpen
from imgpipe.imageproc import geometry, tone
from imgpipe.imageproc.dither import dither
from imgpipe.imageproc.encode import encode
from imgpipe.imageproc.errors import CorruptImage
from imgpipe.imageproc.pixels import normalise
from imgpipe.imageproc.safety import FAIL_ON, Limits, Probe, check_output, probe

Apply = Callable[[pyvips.Image, Any], pyvips.Image]

APPLY: dict[type[Operation], Apply] = {
    Resize: geometry.resize,
    Dither: dither,
    Blur: tone.blur,
    Sharpen: tone.sharpen,
    Grayscale: tone.grayscale,
}
"""The function that performs each operation model."""

SEQUENTIAL_SAFE: frozenset[type[Operation]] = frozenset({Resize, Dither, Grayscale})
"""Operations that read their input top to bottom, so the loader may stream."""


@dataclass(frozen=True)
class Result:
    """An encoded output and what is known about it and its input."""

    data: bytes
    format: str
    width: int
    height: int
    input: Probe

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the output bytes."""
        return hashlib.sha256(self.data).hexdigest()


def vips_version() -> str:
    """The libvips version, e.g. ``8.18.7``."""
    return f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"


def _load(data: bytes, info: Probe, pipeline: Pipeline) -> tuple[pyvips.Image, list[Operation]]:
    steps = list(pipeline.steps)
    first = steps[0] if steps else None
    if isinstance(first, Resize) and first.kernel == "lanczos3":
        width, height = info.upright_size if pipeline.autorotate else (info.width, info.height)

        def thumbnail(w: int, **options: Any) -> pyvips.Image:
            return pyvips.Image.thumbnail_buffer(
                data,
                w,
                no_rotate=not pipeline.autorotate,
                option_string=f"fail_on={FAIL_ON}",
                **options,
            )

        image = geometry.resize_with(thumbnail, width, height, first)
        return normalise(image), steps[1:]
    rotates = pipeline.autorotate and info.orientation != 1
    sequential = not rotates and all(type(op) in SEQUENTIAL_SAFE for op in steps)
    image = pyvips.Image.new_from_buffer(
        data, "", access="sequential" if sequential else "random", fail_on=FAIL_ON
    )
    if pipeline.autorotate:
        image = image.autorot()
    return normalise(image), steps


def process(data: bytes, pipeline: Pipeline, limits: Limits | None = None) -> Result:
    """Run ``pipeline`` over the image ``data`` and encode the result.

    Deterministic: the same bytes, pipeline and libvips version give the same
    output bytes. Raises the refusals of :mod:`imgpipe.imageproc.errors`.
    """
    limits = limits or Limits()
    info = probe(data, limits)
    try:
        image, steps = _load(data, info, pipeline)
        for op in steps:
            image = APPLY[type(op)](image, op)
        check_output(image, limits)
        width, height = image.width, image.height
        out = encode(image, pipeline.output)
    except pyvips.Error as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CorruptImage(f"image does not decode: {lines[-1][:300] if lines else exc}") from None
    return Result(out, pipeline.output_format, width, height, info)
