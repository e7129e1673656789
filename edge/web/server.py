"""The box's local web server: the installer's live-view page and WHEP on the LAN.

Routes: ``GET /`` and ``/static/*`` (the page, no secret in it, no login needed to load it);
``GET /api/site`` (cameras and outputs); ``POST /whep/{camera}`` (SDP offer in, answer out,
RFC 9725 WHEP) and ``DELETE /whep/{camera}/{session}``. Everything but the page needs HTTP
Basic auth against the per-box user file (there is no default password).

Guessing passwords is slowed twice: scrypt makes each check cost, and an address with more than
``max_failures_per_minute`` failures is answered 429 - even with the right password - until the
minute has passed, so a guesser cannot tell when it found one. The server only speaks HTTP; the
WebRTC work, viewer caps and the access policy are the live hub's (:class:`LiveHubApi`).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import BasicAuth, hdrs, web

from edge.config.live import WebConfig
from edge.errors import ConfigError
from edge.tasks import within
from edge.video.live.api import LiveHubApi, LiveRefused
from edge.web.credentials import PASSWD_HINT, Credentials

log = logging.getLogger(__name__)

SDP = "application/sdp"
MAX_OFFER = 64 * 1024  # bytes of an SDP offer (a browser's is 3-8 KB)
OPEN_TIMEOUT_S = 20.0  # the hub gathers ICE candidates before it answers
CLOSE_TIMEOUT_S = 5.0
WINDOW_S = 60.0  # failed logins are counted over this window
MAX_ADDRESSES = 1024  # client addresses whose failures are remembered
MAX_CHECKS = 16  # password checks waiting at once; more are told to retry
CHECKS_AT_ONCE = 2  # scrypt checks running at once (CPU left to the cameras)
VIEWER_CAP_RETRY_S = 10
SHUTDOWN_S = 3.0

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


class _Refusal(Exception):
    """A request answered with ``status`` and a one-sentence text/plain body."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.reason + "\n", headers=self.headers)


class FailureLimiter:
    """Failed logins per client address within the last ``window`` seconds.

    At most ``max_addresses`` addresses are remembered (the one failing least recently is
    forgotten first), and each keeps at most ``limit + 1`` times, so memory stays bounded
    whatever a scan of the LAN sends.
    """

    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_addresses, self.clock = (
            limit,
            window,
            max_addresses,
            clock,
        )
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def wait_s(self, address: str) -> float:
        """Seconds ``address`` must still wait; 0 when it may try."""
        times = self._failures.get(address)
        if times is None:
            return 0.0
        now = self.clock()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return 0.0
        return times[0] + self.window - now if len(times) > self.limit else 0.0

    def failed(self, address: str) -> None:
        times = self._failures.pop(address, None) or collections.deque(maxlen=self.limit + 1)
        times.append(self.clock())
        self._failures[address] = times
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


class WebServer:
    """The local web server of one box; ``start`` binds it, ``stop`` closes it."""

    def __init__(
        self,
        cfg: WebConfig,
        hub: LiveHubApi,
        *,
        site_id: str,
        credentials: Credentials | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.hub, self.site_id = cfg, hub, site_id
        self.credentials = credentials or Credentials(cfg.credentials_file)
        self.limiter = FailureLimiter(cfg.max_failures_per_minute, clock=clock)
        self._files = {name: _static(name) for name in STATIC}
        self._checks = 0
        self._slots = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._runner: web.AppRunner | None = None

    # -- life cycle -------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's test server)."""
        app = web.Application(client_max_size=MAX_OFFER, middlewares=[self._log_and_refuse])
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/site", self._site)
        app.router.add_post("/whep/{camera}", self._offer)
        app.router.add_patch("/whep/{camera}", _no_trickle("POST"))
        app.router.add_delete("/whep/{camera}/{session}", self._delete)
        app.router.add_patch("/whep/{camera}/{session}", _no_trickle("DELETE"))
        return app

    async def start(self) -> None:
        """Bind ``web.listen``:``web.port``; ConfigError when that address cannot be used."""
        if self._runner is not None:
            raise RuntimeError("the web server is already started")
        tls = self._tls()
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S
        )
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.listen, self.cfg.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError("web", [_bind_problem(self.cfg, exc)]) from exc
        self._runner = runner
        log.info("local web server on %s", self.url)
        if not self.credentials.configured:
            log.warning("no web user in %s yet: %s", self.credentials.path, PASSWD_HINT)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The TCP port actually bound (``web.port``, or the one chosen for port 0)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the web server is not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """Where this box's page is, as seen from the box itself."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.cfg.listen, self.cfg.listen
        )
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.cfg.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    def _tls(self) -> ssl.SSLContext | None:
        if not self.cfg.tls_cert or not self.cfg.tls_key:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "web",
                [
                    f"web.tls_cert / web.tls_key: cannot load {self.cfg.tls_cert} with "
                    f"{self.cfg.tls_key}: {exc}: give a PEM certificate and its private key"
                ],
            ) from exc
        return ctx

    # -- requests -----------------------------------------------------------------------------
    @web.middleware
    async def _log_and_refuse(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn refusals into short text answers and write one access line per request."""
        status = 500
        try:
            try:
                response = await handler(request)
            except _Refusal as refusal:
                response = refusal.response()
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            log.info(
                "web %s %s %s %s -> %d",
                request.remote,
                request.get(USER_KEY, "-"),
                request.method,
                request.path,
                status,
            )

    async def _page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in self._files:
            raise _Refusal(404, "no such file")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], content_type=STATIC[name], charset="utf-8")

    async def _site(self, request: web.Request) -> web.Response:
        await self._authorise(request)
        return web.json_response(self.hub.describe())

    async def _offer(self, request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        try:
            user = await self._authorise(request)
        except _Refusal as exc:
            if exc.status in (401, 429):  # a refused attempt to watch: in the audit trail
                self._audit_refusal(request, camera, exc.reason)
            raise
        if request.content_type != SDP:
            raise _Refusal(415, f"send the SDP offer with Content-Type: {SDP}")
        try:
            offer = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            raise _Refusal(400, "the SDP offer is not UTF-8 text") from None
        if not offer.strip():
            raise _Refusal(400, "the request body must be an SDP offer")
        remote = request.remote or "unknown"
        try:
            session, answer = await within(
                self.hub.open_lan(camera, offer, user=user, remote=remote), OPEN_TIMEOUT_S
            )
        except LiveRefused as exc:
            raise _refused(exc) from None
        except TimeoutError:
            raise _Refusal(503, "live view did not answer in time: try again") from None
        log.info("live session %s: camera %s for %s from %s", session, camera, user, remote)
        location = f"/whep/{quote(camera, safe='')}/{quote(session, safe='')}"
        return web.Response(
            status=201,
            body=answer.encode("utf-8"),
            content_type=SDP,
            headers={"Location": location},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        user = await self._authorise(request)
        camera, session = request.match_info["camera"], request.match_info["session"]
        missing = _Refusal(404, f"no live session {session} on camera {camera}")
        if self.hub.session_camera(session) != camera:
            raise missing
        try:
            closed = await within(self.hub.close(session, f"stopped by {user}"), CLOSE_TIMEOUT_S)
        except LiveRefused as exc:
            raise _refused(exc) from None
        except TimeoutError:
            raise _Refusal(503, "live view did not answer in time: try again") from None
        if not closed:
            raise missing
        return web.Response(text="session closed\n")

    def _audit_refusal(self, request: web.Request, camera: str, reason: str) -> None:
        try:
            auth = BasicAuth.decode(request.headers.get(hdrs.AUTHORIZATION, ""), encoding="utf-8")
            login = "".join(c for c in auth.login[:40] if c.isprintable())
        except ValueError:
            login = "?"
        refusal = LiveRefused("unauthorised", reason)
        self.hub.refused(
            camera, f"lan:{login or '?'}", refusal, via="lan", remote=request.remote or "unknown"
        )

    # -- authentication -----------------------------------------------------------------------
    async def _authorise(self, request: web.Request) -> str:
        """The user name of a request with good Basic credentials; _Refusal otherwise."""
        remote = request.remote or "unknown"
        wait = self.limiter.wait_s(remote)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise _Refusal(
                429,
                f"too many failed logins from {remote}: wait {seconds} s",
                {hdrs.RETRY_AFTER: str(seconds)},
            )
        if not self.credentials.configured:
            raise _Refusal(503, f"no web user is configured on this box: {PASSWD_HINT}")
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            raise self._unauthorised("log in with a user created by `edge web passwd USER`")
        try:
            auth = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            auth = None
        if auth is None or not await self._check(auth.login, auth.password):
            self.limiter.failed(remote)
            login = auth.login[:40] if auth else "(unreadable Authorization header)"
            log.warning("failed web login as %r from %s", login, remote)
            raise self._unauthorised("wrong user name or password")
        request[USER_KEY] = auth.login
        return auth.login

    async def _check(self, user: str, password: str) -> bool:
        """scrypt off the event loop, a bounded number at a time."""
        if self._checks >= MAX_CHECKS:
            raise _Refusal(503, "too many logins at once: retry", {hdrs.RETRY_AFTER: "2"})
        self._checks += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(self.credentials.verify, user, password)
        finally:
            self._checks -= 1

    def _unauthorised(self, reason: str) -> _Refusal:
        return _Refusal(401, reason, {hdrs.WWW_AUTHENTICATE: f'Basic realm="edge {self.site_id}"'})


def _refused(exc: LiveRefused) -> _Refusal:
    headers: dict[str, str] = {}
    if exc.code == "viewer_cap":
        headers[hdrs.RETRY_AFTER] = str(VIEWER_CAP_RETRY_S)
    return _Refusal(STATUS.get(exc.code, 503), exc.reason, headers)


def _no_trickle(allow: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        raise _Refusal(
            405,
            "trickle ICE is not supported: the answer already carries every candidate",
            {hdrs.ALLOW: allow},
        )

    return handler


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, errors included: nothing cached (credentials and live state), no
    content sniffing, no framing, nothing loaded or run but the page's own files."""
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"


def _static(name: str) -> bytes:
    """A file of the page, from the installed package (package data ``edge.web/static``)."""
    return (resources.files("edge.web") / "static" / name).read_bytes()


def _bind_problem(cfg: WebConfig, exc: OSError) -> str:
    where = f"web.listen / web.port: cannot listen on {cfg.listen}:{cfg.port}: {exc}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: another program uses this port (`ss -ltnp` shows which); "
            "choose another web.port or stop that program"
        )
    if exc.errno == errno.EACCES and cfg.port < 1024:
        return f"{where}: ports below 1024 need privileges; choose web.port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"{where}: web.listen must be an address of this box (0.0.0.0: all of them)"
    return where
