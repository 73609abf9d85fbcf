"""How long past its deadline a colour dither of random pixels stops, with helper processes.

    .venv/bin/python bench/dither_deadline.py                # 2000x2000, 3 rounds
    .venv/bin/python bench/dither_deadline.py --size 1000 --rounds 1
    .venv/bin/python bench/dither_deadline.py --cost     # what the helper's encode costs

The image is random RGB pixels (the slowest input for a 256-colour median cut,
its diffusion and the palette PNG encode after it), processed with
``dither:256,mono=false/format:png`` the way the service does it: libvips at
one thread per image, ``dither`` through two helper processes. Each round:

1. no deadline: how long the diffusion and the whole job take;
2. a deadline of ``--deadline`` seconds (it falls in the diffusion);
3. a deadline ``--after`` seconds after the diffusion ends. So that this
   lands in the encode however the machine's load moves between runs, the
   diffusion's answer is replayed from step 1 (the bench keeps it): the time
   to reach the encode is then the decode and pixel copies only, measured
   by a replayed run without deadline just before.

Each line says how far past its deadline the job stopped, in which phase the
deadline fell, and how many helper processes are left.

``--cost`` compares instead, on a 400x300 image, the time of a job whose palette
PNG encode runs in a helper with one whose encode runs in the calling thread
(the diffusion in a helper for both), alternating, and prints the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Mapping

import pyvips

from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.diffusers import IN_THREAD, DiffusionHelpers
from imgpipe.imageproc.engine import process
from imgpipe.imageproc.errors import ProcessingTimeout
from imgpipe.imageproc.safety import Limits, configure_vips

PIPELINE = "dither:256,mono=false/format:png"


class TimedHelpers(DiffusionHelpers):
    """Helpers that note when the last diffusion came back, and can replay its answer."""

    diffused = 0.0
    replay = False
    answer: bytes | None = None

    def diffuse(self, *args: object) -> bytes:
        if self.replay and self.answer is not None:
            out = self.answer
        else:
            out = self.answer = super().diffuse(*args)  # type: ignore[arg-type]
        self.diffused = time.monotonic()
        return out


class EncodeHere(DiffusionHelpers):
    """Helpers that diffuse but leave the palette PNG encode to the calling thread."""

    def save_png(
        self, image: pyvips.Image, options: Mapping[str, object], deadline: float | None
    ) -> bytes:
        return IN_THREAD.save_png(image, options, deadline)


def cost(requests: int) -> None:
    """Median time of small dithers with the encode in a helper and in the thread."""
    image = pyvips.Image.gaussnoise(400, 300, sigma=40, mean=128)
    image = image.bandjoin([image.rot180(), image.flip("horizontal")]).cast("uchar")
    data = bytes(image.copy(interpretation="srgb").pngsave_buffer())
    ways = {"encode in the thread": EncodeHere(1), "encode in a helper": DiffusionHelpers(1)}
    try:
        for spec in ("dither:8/format:png", "dither:16,mono=false/format:png"):
            pipeline = parse_pipeline(spec)
            times: dict[str, list[float]] = {name: [] for name in ways}
            for helpers in ways.values():
                process(data, pipeline, diffuser=helpers)  # helpers started, libvips loaded
            for _ in range(requests):
                for name, helpers in ways.items():
                    started = time.perf_counter()
                    process(data, pipeline, diffuser=helpers)
                    times[name].append(time.perf_counter() - started)
            medians = ", ".join(
                f"{name} {statistics.median(t) * 1000:.1f} ms" for name, t in times.items()
            )
            print(f"{spec}, 400x300, median of {requests}: {medians}")
    finally:
        for helpers in ways.values():
            helpers.close()


def random_png(size: int) -> bytes:
    pixels = os.urandom(size * size * 3)
    image = pyvips.Image.new_from_memory(pixels, size, size, 3, "uchar")
    return bytes(image.copy(interpretation="srgb").pngsave_buffer(compression=1))


def run(data: bytes, helpers: TimedHelpers, deadline: float | None) -> tuple[str, float]:
    """One job: how it ended relative to its deadline, and when its diffusion ended."""
    started = time.monotonic()
    helpers.diffused = 0.0
    try:
        process(data, parse_pipeline(PIPELINE), Limits(), deadline=deadline, diffuser=helpers)
        outcome = "done"
    except ProcessingTimeout:
        outcome = "ProcessingTimeout"
    ended = time.monotonic()
    line = f"{outcome} after {ended - started:.2f} s"
    if deadline is not None:
        phase = "encode" if 0 < helpers.diffused < deadline else "diffusion"
        line += (f" (deadline {deadline - started:.2f} s, in the {phase};"
                 f" stopped {ended - deadline:+.2f} s past it)")
    else:
        line += f", diffusion ended at {helpers.diffused - started:.2f} s"
    return f"{line}; helpers alive {len(helpers.pids())}", helpers.diffused - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=1.5)
    parser.add_argument("--after", type=float, default=0.5)
    parser.add_argument("--cost", action="store_true")
    args = parser.parse_args()
    configure_vips(threads=1)
    if args.cost:
        cost(40)
        return
    data = random_png(args.size)
    helpers = TimedHelpers(2)
    try:
        for n in range(1, args.rounds + 1):
            helpers.replay = False
            print(f"round {n}: no deadline: {run(data, helpers, None)[0]}")
            line, _ = run(data, helpers, time.monotonic() + args.deadline)
            print(f"round {n}: deadline {args.deadline} s: {line}")
            helpers.replay = True
            line, reached = run(data, helpers, None)
            print(f"round {n}: diffusion replayed, no deadline: {line}")
            line, _ = run(data, helpers, time.monotonic() + reached + args.after)
            print(f"round {n}: diffusion replayed, deadline {args.after} s after it: {line}")
    finally:
        helpers.close()


if __name__ == "__main__":
    main()
