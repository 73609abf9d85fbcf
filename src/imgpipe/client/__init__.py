"""imgpipe's command-line client of the upload service (``imgpipe submit``, ``imgpipe jobs``)."""

from imgpipe.client.api import ApiError, Client

__all__ = ["ApiError", "Client"]
