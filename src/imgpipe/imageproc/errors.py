"""Refusals of the image engine, each with its own reason and HTTP status."""

from __future__ import annotations

from imgpipe.errors import InvalidInput, TransientError


class UnsupportedFormat(InvalidInput):
    """Empty input, bytes of no known image format, or a format that is not allowed."""

    reason = "unsupported_format"
    status = 415


class TooLarge(InvalidInput):
    """The input has more bytes than the configured maximum."""

    reason = "too_large"
    status = 413


class TooManyPixels(InvalidInput):
    """The input (or the output asked for) has more pixels or frames than allowed."""

    reason = "too_many_pixels"
    status = 413


class CorruptImage(InvalidInput):
    """The input's header is readable but its pixel data is truncated or corrupt."""

    reason = "corrupt_image"
    status = 422


class Overloaded(TransientError):
    """Every worker is busy and the queue is full; retry after a moment."""

    reason = "overloaded"
    status = 429


class ProcessingTimeout(TransientError):
    """Processing took longer than the per-request time limit."""

    reason = "timeout"
    status = 504


class InputMismatch(InvalidInput):
    """The input's bytes do not hash to the sha256 the caller named for them."""

    reason = "input_changed"
    status = 422


class SigningFailed(TransientError):
    """The output could not be signed (a time-stamp authority or key service failed)."""

    reason = "signing_failed"
    status = 503


class InputMissing(InvalidInput):
    """The object a presigned input URL names is not there (S3 answered 404)."""

    reason = "input_missing"
    status = 422


class StorageRefused(InvalidInput):
    """S3 refused a presigned URL (expired or wrong) or answered a redirect, never followed."""

    reason = "storage_refused"
    status = 422


class CallerGone(TransientError):
    """The output was ready after the caller stopped waiting; it was not written."""

    reason = "caller_gone"
    status = 504
