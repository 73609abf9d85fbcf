"""dither's error diffusion in helper processes: the same bytes, and a deadline that stops it."""

from __future__ import annotations

import time
from collections.abc import Iterator

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


@pytest.fixture
def helpers() -> Iterator[DiffusionHelpers]:
    pool = DiffusionHelpers(2)
    yield pool
    pool.close()
    assert pool.pids() == []


def noise(width: int, height: int) -> bytes:
    """RGB noise: the slowest input for a 256-colour median cut and diffusion."""
    image = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)
    image = image.bandjoin([pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)] * 2)
    return bytes(image.cast("uchar").copy(interpretation="srgb").pngsave_buffer(compression=1))


@pytest.mark.parametrize("spec", ["dither", "dither:4/format:png", "dither:6,mono=false/format:gif"])
def test_helpers_give_the_bytes_of_in_thread_diffusion(helpers: DiffusionHelpers, spec: str) -> None:
    data = noise(240, 160)
    pipeline = parse_pipeline(spec)
    here = process(data, pipeline).data
    assert process(data, pipeline, diffuser=helpers).data == here
    assert process(data, pipeline, diffuser=helpers).data == here
    assert helpers.started == 1  # the idle helper was reused


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
