"""Benchmark Content Credentials: ms per signature and bytes added, per output format.

    .venv/bin/python bench/credentials.py              # 1600x1200 photo-like input -> 800 px
    .venv/bin/python bench/credentials.py --smoke      # tiny, a second; run by no test

For each output format and signing algorithm: libvips encodes the output once
(in process), then :meth:`ContentSigner.sign` signs it ``--repeat`` times in
one thread (thumbnails off, no time-stamp authority, nothing fetched). The
reported time is the median CPU time of the process per signature
(``time.process_time``, all threads; nothing else runs in the process, so
this is the signing's own cost even on a busy machine) and the median wall time, including building the
manifest and checking the input for credentials of its own; the encode CPU
time is given beside it for scale. ``--verify`` also gives the CPU time of one
validation (:func:`imgpipe.credentials.reading.inspect`).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyvips

from imgpipe.credentials.chain import make_chain
from imgpipe.credentials.manifest import Step
from imgpipe.credentials.reading import inspect
from imgpipe.credentials.signing import ContentSigner, SigningKey
from imgpipe.domain.pipeline import parse_pipeline
from imgpipe.imageproc.engine import process

FORMATS = ("jpeg", "png", "webp", "avif", "tiff", "gif")


def photo_like(width: int, height: int) -> bytes:
    """A noisy gradient JPEG (compresses like a photo, not like a flat test card)."""
    x = pyvips.Image.xyz(width, height)
    base = (x[0] * 255 / width).bandjoin([x[1] * 255 / height, (x[0] + x[1]) * 128 / (width + height)])
    noise = pyvips.Image.gaussnoise(width, height, sigma=25).bandjoin(
        [pyvips.Image.gaussnoise(width, height, sigma=25)] * 2)
    data: bytes = (base + noise - 128).cast("uchar").copy(interpretation="srgb").jpegsave_buffer(Q=90)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--width", type=int, default=800, help="output width")
    parser.add_argument("--verify", action="store_true", help="time one validation too")
    args = parser.parse_args(argv)
    source = photo_like(160, 120) if args.smoke else photo_like(1600, 1200)
    repeat = 3 if args.smoke else args.repeat
    width = 64 if args.smoke else args.width
    input_sha = hashlib.sha256(source).hexdigest()
    print(f"input {len(source)} B JPEG; output {width} px wide; {repeat} signatures per cell; "
          f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}")
    print("| format | alg | encode CPU ms | sign CPU ms | sign wall ms | payload B | "
          "signed B | added B |" + (" verify CPU ms |" if args.verify else ""))
    print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.verify else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for alg in ("ed25519", "es256"):
            files = make_chain(Path(tmp) / alg, kind=alg)  # type: ignore[arg-type]
            signer = ContentSigner(SigningKey(chain=files.chain.read_text(), alg=alg,
                                              private_key=files.key.read_text()))
            for fmt in FORMATS:
                pipeline = parse_pipeline(f"resize:w={width}/format:{fmt}")
                clock = time.process_time()
                result = process(source, pipeline)
                encode_ms = (time.process_time() - clock) * 1000
                step = Step(pipeline=pipeline, input_sha256=input_sha, input_format="jpeg",
                            payload_sha256=result.sha256, job_id="0" * 32, stage="bench")
                cpu, wall = [], []
                signed = b""
                for _ in range(repeat + 1):
                    clock, started = time.process_time(), time.perf_counter()
                    signed = signer.sign(result.data, step, source)
                    cpu.append((time.process_time() - clock) * 1000)
                    wall.append((time.perf_counter() - started) * 1000)
                cpu, wall = cpu[1:], wall[1:]  # the first includes making the thread's signer
                row = (f"| {fmt} | {alg} | {encode_ms:.1f} | {statistics.median(cpu):.2f} | "
                       f"{statistics.median(wall):.2f} | {len(result.data)} | {len(signed)} | "
                       f"{len(signed) - len(result.data)} |")
                if args.verify:
                    clock = time.process_time()
                    found = inspect(signed, None, files.ca.read_text())
                    assert found.verdict == "trusted", found.failures
                    row += f" {(time.process_time() - clock) * 1000:.2f} |"
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
