"""dither's error diffusion and palette PNG encode in helper processes: the same bytes, and a
deadline that stops them."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
import pyvips

from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.diffusers import DiffusionHelpers
from imgpipe.imageproc.engine import process
from imgpipe.imageproc.errors import ProcessingTimeout
from imgpipe.imageproc.safety import Limits, configure_vips


@pytest.fixture(autouse=True, scope="module")
def _vips() -> None:
    configure_vips()


class WatchedHelpers(DiffusionHelpers):
    """Helpers that note when a palette PNG encode was handed to them."""

    encode_started = math.inf

    def save_png(
        self, image: pyvips.Image, options: Mapping[str, object], deadline: float | None
    ) -> bytes:
        self.encode_started = time.monotonic()
        return super().save_png(image, options, deadline)


@pytest.fixture
def helpers() -> Iterator[WatchedHelpers]:
    pool = WatchedHelpers(2)
    yield pool
    pool.close()
    assert pool.pids() == []


def noise(width: int, height: int) -> bytes:
    """RGB noise: the slowest input for a 256-colour median cut and diffusion."""
    image = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)
    image = image.bandjoin([pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)] * 2)
    return bytes(image.cast("uchar").copy(interpretation="srgb").pngsave_buffer(compression=1))


def grey_noise(width: int, height: int) -> bytes:
    image = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)
    return bytes(image.cast("uchar").copy(interpretation="b-w").pngsave_buffer(compression=1))


def photo_with_metadata(width: int, height: int) -> bytes:
    """A JPEG with an ICC profile, EXIF (an artist, a resolution) and orientation 6."""
    image = pyvips.Image.new_from_buffer(noise(width, height), "").copy(xres=11.811, yres=11.811)
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    image.set_type(pyvips.GValue.gstr_type, "exif-ifd0-Artist", "A. Photographer")
    return bytes(image.jpegsave_buffer(Q=90, profile="srgb", keep="all"))


@pytest.mark.parametrize("spec", ["dither", "dither:4/format:png", "dither:6,mono=false/format:gif"])
def test_helpers_give_the_bytes_of_in_thread_diffusion(helpers: DiffusionHelpers, spec: str) -> None:
    data = noise(240, 160)
    pipeline = parse_pipeline(spec)
    here = process(data, pipeline).data
    assert process(data, pipeline, diffuser=helpers).data == here
    assert process(data, pipeline, diffuser=helpers).data == here
    assert helpers.started == 1  # the idle helper was reused


@pytest.mark.parametrize(
    "spec",
    [
        "dither:8/format:png",  # grey, 4-bit palette
        "dither:200/format:png",  # grey, 8-bit palette
        "dither:3,mono=false/format:png",  # colour, 2-bit palette
        "dither:16,mono=false/format:png,keep=meta",
        "dither:256,mono=false/format:png,progressive=true,effort=9",
        "format:png,palette=true,keep=meta",
    ],
)
def test_helpers_encode_palette_pngs_to_the_bytes_of_in_thread_encodes(
    helpers: WatchedHelpers, spec: str
) -> None:
    data = photo_with_metadata(240, 160)
    pipeline = parse_pipeline(spec)
    here = process(data, pipeline).data
    assert process(data, pipeline, diffuser=helpers).data == here
    assert helpers.encode_started < math.inf, "the encode was not handed to the helpers"
    assert helpers.started == 1  # one helper diffused (if asked) and encoded


def test_a_dither_past_its_deadline_is_stopped_and_its_helper_killed(
    helpers: DiffusionHelpers,
) -> None:
    # 9 MP of noise: quantising takes about 1 s here, the diffusion several more, so
    # the deadline falls inside the diffusion (at 4 MP a quiet machine finished it in time).
    data = noise(3000, 3000)
    pipeline = parse_pipeline("dither:256,mono=false/format:png")
    deadline = time.monotonic() + 2.0
    with pytest.raises(ProcessingTimeout):
        process(data, pipeline, Limits(), deadline=deadline, diffuser=helpers)
    late = time.monotonic() - deadline
    assert helpers.started == 1, "the deadline passed before the diffusion began"
    assert late < 0.5, f"stopped {late:.2f} s after the deadline"
    assert helpers.pids() == []
    small = noise(64, 48)
    assert process(small, parse_pipeline("dither"), diffuser=helpers).data == process(
        small, parse_pipeline("dither")
    ).data
    assert helpers.started == 2


@pytest.mark.parametrize(
    ("spec", "data"),
    [
        # 9 MP of grey noise in 256 levels: the diffusion takes a fraction of a second here
        # and the palette PNG encode several, so the deadline falls inside the encode.
        ("dither:256/format:png", lambda: grey_noise(3000, 3000)),
        # Colour noise quantised to a palette: decoding is quick, quantising takes seconds.
        ("format:png,palette=true", lambda: noise(3000, 3000)),
    ],
)
def test_a_palette_encode_past_its_deadline_is_stopped_and_its_helper_killed(
    helpers: WatchedHelpers, spec: str, data: Callable[[], bytes]
) -> None:
    image = data()
    deadline = time.monotonic() + 2.0
    with pytest.raises(ProcessingTimeout):
        process(image, parse_pipeline(spec), Limits(), deadline=deadline, diffuser=helpers)
    late = time.monotonic() - deadline
    assert helpers.encode_started < deadline, "the deadline passed before the encode began"
    assert late < 0.5, f"stopped {late:.2f} s after the deadline"
    assert helpers.pids() == []
    small = noise(64, 48)
    pipeline = parse_pipeline("dither:16,mono=false/format:png")
    assert process(small, pipeline, diffuser=helpers).data == process(small, pipeline).data
    assert helpers.started == 2
