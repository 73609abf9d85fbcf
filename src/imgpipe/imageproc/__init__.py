"""imageproc: libvips operations, untrusted-input safety and the HTTP service.

``create_app`` and ``run_imageproc`` are imported lazily so that importing
this package loads neither aiohttp nor libvips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgpipe.imageproc.service import create_app, run_imageproc

__all__ = ["create_app", "run_imageproc"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from imgpipe.imageproc import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
