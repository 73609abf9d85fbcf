"""Optional API tokens for the upload service (``Authorization: Bearer``).

When ``UPLOAD_API_TOKENS`` is set, every request needs one of its tokens,
except the operational routes and the public page's static files: a request
without a valid token gets 401 before its body is read, so nothing is stored.
Unknown routes are protected too (closed by default).

Each token maps to a principal (its name): the request carries it as
``request[PRINCIPAL]``; without tokens there is none (anonymous).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

from imgpipe.runtime.http import error_response

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PAGES = frozenset({"/", "/index.html", "/favicon.ico", "/openapi.json", "/openapi.yaml",
                          "/docs", "/api"})
PUBLIC_PREFIXES = ("/static/",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", str)


def principal_of(request: web.Request) -> str | None:
    return request.get(PRINCIPAL)


def is_public(request: web.Request) -> bool:
    if request.path in PUBLIC_PATHS:
        return True
    if request.method not in ("GET", "HEAD"):
        return False
    return request.path in PUBLIC_PAGES or request.path.startswith(PUBLIC_PREFIXES)


def token_of(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def principal_for(token: str | None, tokens: Mapping[str, str]) -> str | None:
    """The principal of ``token``, or None when it is none of ``tokens`` (constant time)."""
    if token is None:
        return None
    given = token.encode()
    found: str | None = None
    for expected, name in tokens.items():
        if hmac.compare_digest(given, expected.encode()):
            found = name
    return found


def auth_middleware(tokens: Mapping[str, str]) -> Middleware:
    """A middleware that refuses requests without one of ``tokens`` (none: all pass)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tokens:
            return await handler(request)
        principal = principal_for(token_of(request), tokens)
        if principal is not None:
            request[PRINCIPAL] = principal
        elif not is_public(request):
            given = "Authorization" in request.headers
            return error_response(
                401, "invalid_token" if given else "missing_token",
                "This imgpipe needs an API token: send 'Authorization: Bearer <token>'."
                if not given else "The API token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="imgpipe"'},
            )
        return await handler(request)

    return middleware
