"""glibc malloc tuning for processes whose threads allocate large buffers (libvips).

glibc gives each thread that meets contention an arena of its own (up to 8
per core) and returns freed memory from them reluctantly, so a process that
decodes images in worker threads grows by tens of megabytes over its first
thousand jobs. Two arenas keep it flat (``docs/benchmarks.md``, memory).
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

M_ARENA_MAX = -8
"""``mallopt`` parameter number of ``M_ARENA_MAX`` in glibc's ``malloc.h``."""

DEFAULT_ARENAS = 2


def limit_arenas(arenas: int = DEFAULT_ARENAS, environ: Mapping[str, str] = os.environ) -> bool:
    """Cap glibc's malloc arenas as ``MALLOC_ARENA_MAX`` would; True when applied.

    Call it before the worker threads start. Nothing happens when the
    environment sets ``MALLOC_ARENA_MAX`` itself or the C library is not glibc.
    """
    if "MALLOC_ARENA_MAX" in environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, arenas))
