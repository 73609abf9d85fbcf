"""One job's data path, sequentially: the runner moving bytes versus ``/process-object``.

    .venv/bin/python bench/data_path.py                    # 40 jobs of a 160x120 JPEG
    .venv/bin/python bench/data_path.py --size 3000x2000   # a 6 MP photo

Against a private SeaweedFS and an in-process imageproc on loopback, one job at
a time (nothing queues, so this is latency, not throughput): (a) the bytes
path as the runner does it with ``RUNNER_DATA_PATH=bytes`` (S3 GET, ``POST
/process`` with the bytes, S3 PUT of the answer) and (b) the object path
(two presigned URLs, ``POST /process-object``), alternating. Reports median
wall ms per job of each and the median fetch / process / store times imageproc
reports in its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import pyvips
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from imgpipe.imageproc import create_app
from imgpipe.imageproc.settings import ImageprocSettings
from imgpipe.runtime.config import S3Settings
from imgpipe.storage.s3 import S3Store
from imgpipe.testing.servers.base import start_on_free_ports
from imgpipe.testing.servers.seaweedfs import S3Server


def photo(width: int, height: int) -> bytes:
    """A gradient with grain, so the JPEG is about as large as a photo's."""
    x = pyvips.Image.xyz(width, height)
    r = x[0] * 255 / max(width - 1, 1)
    g = x[1] * 255 / max(height - 1, 1)
    grain = pyvips.Image.gaussnoise(width, height, sigma=12)
    image = (r + grain).bandjoin([g + grain, (r + g) / 2]).cast("uchar")
    return bytes(image.jpegsave_buffer(Q=85))


async def run(jobs: int, width: int, height: int, pipeline: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="imgpipe-data-path-"))
    server = start_on_free_ports(lambda: S3Server(root / "s3", die_with_parent=True))
    store = S3Store(S3Settings(s3_url=server.url, s3_access_key=server.access_key,
                               s3_secret_key=SecretStr(server.secret_key)),
                    buckets=("bench-in", "bench-out"))
    try:
        await store.connect()
        data = photo(width, height)
        sha = hashlib.sha256(data).hexdigest()
        await store.put_bytes("bench-in", "in.jpg", data, content_type="image/jpeg")
        by_bytes: list[float] = []
        by_object: list[float] = []
        parts: list[dict[str, float]] = []
        async with TestServer(create_app(ImageprocSettings())) as imageproc, \
                aiohttp.ClientSession() as http:
            base = str(imageproc.make_url(""))
            for _ in range(jobs):
                start = time.perf_counter()
                got = await store.get_bytes("bench-in", "in.jpg")
                hashlib.sha256(got).hexdigest()
                async with http.post(f"{base}/process", params={"pipeline": pipeline},
                                     data=got) as resp:
                    body = await resp.read()
                await store.put_bytes("bench-out", "bytes.out", body,
                                      content_type=resp.headers["Content-Type"])
                by_bytes.append(time.perf_counter() - start)

                start = time.perf_counter()
                source = await store.presign_get("bench-in", "in.jpg")
                target = await store.presign_put("bench-out", "object.out",
                                                 content_type=resp.headers["Content-Type"])
                assert source is not None and target is not None
                message = {"pipeline": pipeline, "input": {"url": source, "sha256": sha},
                           "output": {"url": target.url, "headers": dict(target.headers)}}
                async with http.post(f"{base}/process-object", json=message) as resp:
                    done = await resp.json()
                    assert resp.status == 200, done
                by_object.append(time.perf_counter() - start)
                parts.append(done["timings"])
        print(f"{jobs} jobs, {width}x{height} JPEG ({len(data)} bytes), pipeline {pipeline!r}")
        print(f"bytes path  median {statistics.median(by_bytes) * 1000:7.1f} ms per job")
        print(f"object path median {statistics.median(by_object) * 1000:7.1f} ms per job")
        for name in ("fetch_s", "process_s", "store_s"):
            print(f"  imageproc {name[:-2]:8} {statistics.median(p[name] for p in parts) * 1000:6.1f} ms")
    finally:
        await store.close()
        server.stop(grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--size", default="160x120", help="input JPEG WIDTHxHEIGHT")
    parser.add_argument("--pipeline", default="thumbnail")
    args = parser.parse_args()
    width, _, height = args.size.partition("x")
    asyncio.run(run(args.jobs, int(width), int(height), args.pipeline))


if __name__ == "__main__":
    main()
