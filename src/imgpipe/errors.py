"""One exception root for imgpipe, with machine-readable reasons.

Every refusal a user can see carries a ``reason`` (a stable code for programs),
a ``message`` (a sentence for people) and the HTTP ``status`` it maps to.
Transient and permanent failures are distinct types, because the runner acts
on that distinction: retry the first, dead-letter the second.
"""

from __future__ import annotations

from typing import Any


class ImgpipeError(Exception):
    """Root of all imgpipe errors."""

    reason: str = "internal_error"
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body every HTTP service answers with."""
        body: dict[str, Any] = {"reason": self.reason, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(ImgpipeError):
    """A missing or malformed setting; the service stops at start."""

    reason = "invalid_setting"


class InvalidInput(ImgpipeError):
    """The client sent something imgpipe refuses; retrying will not help."""

    reason = "invalid_input"
    status = 400


class PermanentError(ImgpipeError):
    """Processing failed in a way that a retry cannot fix (dead-letter it)."""

    reason = "permanent_failure"
    status = 422


class TransientError(ImgpipeError):
    """Something failed that may work when tried again later."""

    reason = "backend_unavailable"
    status = 503
    #: Seconds a client should wait before trying again (the ``Retry-After`` header).
    retry_after: float | None = 5


class Unavailable(TransientError):
    """A backend cannot be reached at all (down, restarting, overloaded).

    The work itself is fine: a consumer holds the message and tries again
    when the backend is back, without spending one of its attempts.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: seconds the backend itself asked to wait (its Retry-After), when it said
        self.wait_hint = retry_after
        if retry_after is not None:
            self.retry_after = retry_after
