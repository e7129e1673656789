"""What the local web server answers besides its routes' own work: refusals as one-sentence
text bodies with the right status, the live hub's refusal codes mapped to HTTP, the security
headers of every answer, and the page's files from the installed package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import hdrs, web

from edge.video.live.api import LiveRefused

VIEWER_CAP_RETRY_S = 10

# LiveRefused code -> HTTP status; the body is the hub's sentence.
STATUS = {
    "unknown_camera": 404,
    "unknown_session": 404,
    "viewer_cap": 503,
    "policy": 403,
    "unauthorised": 403,
    "disabled": 503,
    "bad_offer": 400,
    "busy": 503,
}

# The page loads its own script and style only: no inline code, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# Where the access log finds the user of a request (aiohttp before 3.13 has no RequestKey).
USER_KEY: Any = web.RequestKey("user", str) if hasattr(web, "RequestKey") else "user"
STATIC = {
    "index.html": "text/html",
    "viewer.js": "text/javascript",
    "viewer.css": "text/css",
}


class Refusal(Exception):
    """A request answered with ``status`` and a one-sentence text/plain body."""

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        *,
        login: bool = False,
    ) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}
        self.login = login or status in (401, 429)  # a refused login (summarised)

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.reason + "\n", headers=self.headers)


def refused(exc: LiveRefused) -> Refusal:
    headers: dict[str, str] = {}
    if exc.code == "viewer_cap":
        headers[hdrs.RETRY_AFTER] = str(VIEWER_CAP_RETRY_S)
    return Refusal(STATUS.get(exc.code, 503), exc.reason, headers)


def no_trickle(allow: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        raise Refusal(
            405,
            "trickle ICE is not supported: the answer already carries every candidate",
            {hdrs.ALLOW: allow},
        )

    return handler


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, errors included: nothing cached (credentials and live state), no
    content sniffing, no framing, nothing loaded or run but the page's own files."""
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"


def static_file(name: str) -> bytes:
    """A file of the page, from the installed package (package data ``edge.web/static``)."""
    return (resources.files("edge.web") / "static" / name).read_bytes()
