"""How long past its deadline a colour dither of random pixels stops, with helper processes.

    .venv/bin/python bench/dither_deadline.py                # 2000x2000, 3 rounds
    .venv/bin/python bench/dither_deadline.py --size 1000 --rounds 1

The image is random RGB pixels (the slowest input for a 256-colour median cut,
its diffusion and the palette PNG encode after it), processed with
``dither:256,mono=false/format:png`` the way the service does it: libvips at
one thread per image, ``dither`` through two helper processes. Each round
runs the pipeline without a deadline (how long the diffusion and the whole
job take), then with a deadline of ``--deadline`` seconds, then with one
halfway between the end of that diffusion and the end of that job (so it
falls in the encode), and prints how far past each deadline the job stopped
and in which phase the deadline fell.
"""

from __future__ import annotations

import argparse
import os
import time

import pyvips

from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.diffusers import DiffusionHelpers
from imgpipe.imageproc.engine import process
from imgpipe.imageproc.errors import ProcessingTimeout
from imgpipe.imageproc.safety import Limits, configure_vips


class TimedHelpers(DiffusionHelpers):
    """Helpers that note when the last diffusion came back."""

    diffused = 0.0

    def diffuse(self, *args: object) -> bytes:
        out = super().diffuse(*args)  # type: ignore[arg-type]
        self.diffused = time.monotonic()
        return out


def random_png(size: int) -> bytes:
    pixels = os.urandom(size * size * 3)
    image = pyvips.Image.new_from_memory(pixels, size, size, 3, "uchar")
    return bytes(image.copy(interpretation="srgb").pngsave_buffer(compression=1))


def run(data: bytes, helpers: TimedHelpers, deadline: float | None) -> str:
    """One job; how it ended relative to its deadline."""
    started = time.monotonic()
    helpers.diffused = 0.0
    pipeline = parse_pipeline("dither:256,mono=false/format:png")
    try:
        process(data, pipeline, Limits(), deadline=deadline, diffuser=helpers)
        outcome = "done"
    except ProcessingTimeout:
        outcome = "ProcessingTimeout"
    ended = time.monotonic()
    alive = len(helpers.pids())
    line = f"{outcome} after {ended - started:.2f} s"
    if deadline is not None:
        phase = "encode" if 0 < helpers.diffused < deadline else "diffusion"
        line += (f" (deadline {deadline - started:.2f} s, in the {phase};"
                 f" stopped {ended - deadline:+.2f} s past it)")
    return f"{line}; helpers alive {alive}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=1.5)
    args = parser.parse_args()
    configure_vips(threads=1)
    data = random_png(args.size)
    helpers = TimedHelpers(2)
    try:
        for round_ in range(1, args.rounds + 1):
            started = time.monotonic()
            free = run(data, helpers, None)
            ended = time.monotonic()
            diffusion = helpers.diffused - started
            print(f"round {round_}: no deadline: {free}; diffusion ended at {diffusion:.2f} s")
            middle = (diffusion + ended - started) / 2
            print(f"round {round_}: deadline {args.deadline} s: "
                  f"{run(data, helpers, time.monotonic() + args.deadline)}")
            print(f"round {round_}: deadline {middle:.2f} s: "
                  f"{run(data, helpers, time.monotonic() + middle)}")
    finally:
        helpers.close()


if __name__ == "__main__":
    main()
