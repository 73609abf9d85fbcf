"""imgpipe: image processing pipeline with a provenance record you can verify."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("imgpipe")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
