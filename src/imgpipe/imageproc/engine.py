"""The image engine: bytes plus a pipeline in, encoded bytes out. No I/O, no HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyvips

from imgpipe.domain.pipeline import Operation, Pipeline
from imgpipe.domain.pipeline import geometry as g
from imgpipe.domain.pipeline import tone as t
from imgpipe.domain.pipeline.overlay import Watermark
from imgpipe.imageproc import geometry, tone
from imgpipe.imageproc.diffusers import IN_THREAD, Diffuser
from imgpipe.imageproc.dither import dither
from imgpipe.imageproc.encode import encode
from imgpipe.imageproc.errors import CorruptImage, ProcessingTimeout
from imgpipe.imageproc.overlay import watermark
from imgpipe.imageproc.pixels import normalise, to_srgb_profile
from imgpipe.imageproc.safety import FAIL_ON, Limits, Probe, check_output, probe

Apply = Callable[[pyvips.Image, Any], pyvips.Image]

APPLY: dict[type[Operation], Apply] = {
    g.Resize: geometry.resize,
    g.Crop: geometry.crop,
    g.Rotate: geometry.rotate,
    g.Flip: geometry.flip,
    g.Flop: geometry.flop,
    g.Pad: geometry.pad,
    t.Dither: dither,
    t.Blur: tone.blur,
    t.Sharpen: tone.sharpen,
    t.Grayscale: tone.grayscale,
    t.Brightness: tone.brightness,
    t.Contrast: tone.contrast,
    t.Gamma: tone.gamma,
    t.Pixelate: tone.pixelate,
    t.Flatten: tone.flatten,
}
"""The function that performs each operation model (watermark and dither take more)."""


def reads_randomly(op: Operation) -> bool:
    """True when ``op`` needs its input in any order, so the loader may not stream."""
    if isinstance(op, (g.Flip, g.Rotate)):
        return True
    return isinstance(op, (g.Crop, g.Resize)) and op.gravity in geometry.SMART


@dataclass(frozen=True)
class Result:
    """An encoded output and what is known about it and its input."""

    data: bytes
    format: str
    width: int
    height: int
    input: Probe
    payload_sha256: str | None = None
    """When ``data`` is signed: the sha256 of the bytes libvips encoded (what a re-run repeats)."""

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the output bytes."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def payload(self) -> str:
        """Hex SHA-256 of the image as libvips encoded it, signed or not."""
        return self.payload_sha256 or self.sha256


def vips_version() -> str:
    """The libvips version, e.g. ``8.18.7``."""
    return f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"


def pyvips_version() -> str:
    """The pyvips binding's version, e.g. ``3.0.0``."""
    return str(pyvips.__version__)


def _load(data: bytes, info: Probe, pipeline: Pipeline) -> tuple[pyvips.Image, list[Operation]]:
    steps = list(pipeline.steps)
    first = steps[0] if steps else None
    if isinstance(first, g.Resize) and first.kernel == "lanczos3":
        width, height = info.upright_size if pipeline.autorotate else (info.width, info.height)

        def thumbnail(w: int, **options: Any) -> pyvips.Image:
            return pyvips.Image.thumbnail_buffer(
                data,
                w,
                no_rotate=not pipeline.autorotate,
                option_string=f"fail_on={FAIL_ON}",
                **options,
            )

        convert = info.has_profile and pipeline.output.keep == "none"
        profile = {"export_profile": "srgb"} if convert else {}
        image = geometry.resize_with(
            lambda w, **o: thumbnail(w, **profile, **o), width, height, first
        )
        return _colour(normalise(image), pipeline), steps[1:]
    rotates = pipeline.autorotate and info.orientation != 1
    sequential = not rotates and not any(reads_randomly(op) for op in steps)
    image = pyvips.Image.new_from_buffer(
        data, "", access="sequential" if sequential else "random", fail_on=FAIL_ON
    )
    if pipeline.autorotate:
        image = image.autorot()
    return _colour(normalise(image), pipeline), steps


def _colour(image: pyvips.Image, pipeline: Pipeline) -> pyvips.Image:
    return to_srgb_profile(image) if pipeline.output.keep == "none" else image


def _guard(image: pyvips.Image, deadline: float | None, alive: list[pyvips.Image]) -> pyvips.Image:
    """Make libvips stop computing ``image`` once ``deadline`` (monotonic) passes.

    The image is appended to ``alive``: pyvips's signal handle lives on the
    Python object, which must outlive every evaluation that may signal it.
    """
    if deadline is None:
        return image
    if time.monotonic() > deadline:
        raise ProcessingTimeout("processing took longer than the time limit")

    def check(target: pyvips.Image, progress: object) -> None:
        if time.monotonic() > deadline:
            target.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", check)
    alive.append(image)
    return image


def _vips_failure(exc: pyvips.Error, deadline: float | None) -> Exception:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "libvips error"
    if deadline is not None and (time.monotonic() > deadline or "killed" in last):
        return ProcessingTimeout("processing took longer than the time limit")
    return CorruptImage(f"image does not decode: {last}")


def process(
    data: bytes,
    pipeline: Pipeline,
    limits: Limits | None = None,
    overlays: Mapping[str, bytes] | None = None,
    deadline: float | None = None,
    diffuser: Diffuser = IN_THREAD,
) -> Result:
    """Run ``pipeline`` over the image ``data`` and encode the result.

    Deterministic: the same bytes, pipeline and libvips version give the same
    output bytes. ``deadline`` (a :func:`time.monotonic` value) stops libvips
    mid-computation; ``diffuser`` runs the two calls it cannot interrupt,
    ``dither``'s error diffusion (Pillow) and the quantising encode of a
    palette PNG (libvips): by default in the calling thread, deaf to the
    deadline; the service passes helper processes that honour it. Raises the refusals of
    :mod:`imgpipe.imageproc.errors`.
    """
    limits = limits or Limits()
    info = probe(data, limits)
    alive: list[pyvips.Image] = []
    try:
        image, steps = _load(data, info, pipeline)
        check_output(image, limits)
        for op in steps:
            image = _guard(image, deadline, alive)
            if isinstance(op, Watermark):
                image = watermark(image, op, overlays)
            elif isinstance(op, t.Dither):
                image = dither(image, op, diffuser, deadline)
            else:
                image = APPLY[type(op)](image, op)
            check_output(image, limits)
        image = _guard(image, deadline, alive)
        width, height = image.width, image.height
        out = encode(image, pipeline.output, partial(diffuser.save_png, deadline=deadline))
    except pyvips.Error as exc:
        raise _vips_failure(exc, deadline) from None
    finally:
        alive.clear()
    return Result(out, pipeline.output_format, width, height, info)
