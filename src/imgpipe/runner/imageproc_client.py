"""The runner's client of imageproc (it lives in the core: verification uses it too)."""

from imgpipe.core.imageproc_client import PERMANENT_STATUSES, ImageprocClient, Processed

__all__ = ["PERMANENT_STATUSES", "ImageprocClient", "Processed"]
