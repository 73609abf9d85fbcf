"""imageproc's settings: each field is the environment variable of its name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from imgpipe.runtime.config import C2paSettings, LogSettings, PresetSettings


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, -(-int(quota) // int(period))))


class ImageprocSettings(PresetSettings, C2paSettings, LogSettings):
    """`imgpipe imageproc`: the libvips HTTP service."""

    imageproc_host: str = "127.0.0.1"
    imageproc_port: int = Field(default=8080, ge=0, le=65535)
    imageproc_workers: int = Field(
        default_factory=usable_cpus,
        ge=1,
        le=64,
        description=(
            "Images processed at once (threads running libvips); default one per usable CPU "
            "(affinity and cgroup quota)."
        ),
    )
    imageproc_vips_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "libvips threads per image (its VIPS_CONCURRENCY). One per worker measured best "
            "for a server (docs/benchmarks.md): parallelism comes from the workers."
        ),
    )
    imageproc_queue: int = Field(default=32, ge=0, description="Requests waiting beyond the workers before 429.")
    imageproc_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    imageproc_max_pixels: int = Field(default=50_000_000, ge=1)
    imageproc_deadline: float = Field(
        default=60.0, gt=0, description="Seconds libvips may spend on one image (then 504).")
    imageproc_timeout: float | None = Field(
        default=None, gt=0, description="Deprecated: IMAGEPROC_DEADLINE here.")
    imageproc_max_frames: int = Field(default=1000, ge=1, description="Most frames an input may have.")
    imageproc_max_output_dimension: int = Field(default=16384, ge=1, le=65535)
    imageproc_formats: str = Field(
        default="jpeg,png,webp,avif,tiff,gif", description="Input formats allowed (comma-separated)."
    )
    imageproc_overlays: str | None = Field(
        default=None, description="Directory of watermark images, named by file stem."
    )

    renamed: ClassVar[Mapping[str, str]] = {"imageproc_timeout": "imageproc_deadline"}
