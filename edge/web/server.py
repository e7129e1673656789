"""The box's local web server: the installer's live-view page and WHEP on the LAN.

Routes: ``GET /`` and ``/static/*`` (the page, no secret in it, no login needed to load it);
``GET /api/site`` (cameras and outputs); ``GET /api/diag`` and ``GET /metrics`` (edge-alarm's
diagnostics report as JSON and in the Prometheus text format: :mod:`edge.web.metrics`);
``POST /whep/{camera}`` (SDP offer in, answer out, RFC 9725 WHEP) and ``DELETE
/whep/{camera}/{session}``. Everything but the page needs HTTP Basic auth against the
per-box user file (there is no default password).

Every part is bounded: connections (:mod:`edge.web.connections`: caps per address and in
total, read deadlines, TLS handshakes), request sizes (aiohttp's limits, set below), password
guessing (scrypt makes each check cost; :mod:`edge.web.guard` limits failures per address, per
user name and in total, answering 429 even with the right password so a guesser cannot tell
when it found one) and the audit of refused logins (:mod:`edge.web.refusals`: at most two
rows per address per minute). HTTPS by default (:mod:`edge.web.tls`). A live session can be
ended here only by the user who opened it. The WebRTC work, viewer caps and the access policy
are the live hub's (:class:`LiveHubApi`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import BasicAuth, hdrs, web

from edge.config.live import WebConfig
from edge.errors import ConfigError
from edge.tasks import within
from edge.video.live.api import LiveHubApi, LiveRefused
from edge.web.answers import (
    STATIC,
    USER_KEY,
    Refusal,
    no_trickle,
    refused,
    security_headers,
    static_file,
)
from edge.web.connections import BODY_S, IDLE_S, ConnectionLimits, GuardedSite
from edge.web.credentials import PASSWD_HINT, Credentials
from edge.web.guard import LoginGuard
from edge.web.metrics import CONTENT_TYPE as METRICS_TYPE
from edge.web.metrics import api_view, render
from edge.web.refusals import RefusalLog
from edge.web.tls import server_context

log = logging.getLogger(__name__)

SDP = "application/sdp"
MAX_OFFER = 64 * 1024  # bytes of an SDP offer (a browser's is 3-8 KB)
OPEN_TIMEOUT_S = 20.0  # the hub gathers ICE candidates before it answers
CLOSE_TIMEOUT_S = 5.0
MAX_CHECKS = 16  # password checks waiting at once; more are told to retry
TRUSTED_CHECKS = 4  # of which kept for addresses that logged in before
CHECKS_AT_ONCE = 2  # scrypt checks running at once (CPU left to the cameras)
SHUTDOWN_S = 3.0
TICK_S = 1.0  # refused-login summaries are sent at most this late
# aiohttp's request limits: one header line, one field, and how many fields.
MAX_LINE, MAX_FIELD, MAX_HEADERS = 4096, 4096, 32


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
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.cfg, self.hub, self.site_id = cfg, hub, site_id
        self.credentials = credentials or Credentials(cfg.credentials_file)
        self.guard = LoginGuard(
            cfg.max_failures_per_minute,
            cfg.max_failures_per_minute_total,
            user_backoff_max_s=cfg.user_backoff_max_s,
            clock=clock,
        )
        self.refusals = RefusalLog(hub.audit)
        self.limits = limits if limits is not None else ConnectionLimits()
        self.limits.trusted = self.guard.trusted_key
        self._files = {name: static_file(name) for name in STATIC}
        self._checks = 0
        self._slots = asyncio.Semaphore(CHECKS_AT_ONCE)
        self._runner: web.AppRunner | None = None
        self._site: GuardedSite | None = None
        self._ticker: asyncio.Task[None] | None = None
        # edge-alarm's retained diagnostics report (edge-video keeps it: edge.video.maintenance)
        self.diag_report: Callable[[], dict[str, Any] | None] = lambda: None

    # -- life cycle -------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's test server)."""
        app = web.Application(client_max_size=MAX_OFFER, middlewares=[self._log_and_refuse])
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/site", self._site_info)
        app.router.add_get("/api/diag", self._diag)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/whep/{camera}", self._offer)
        app.router.add_patch("/whep/{camera}", no_trickle("POST"))
        app.router.add_delete("/whep/{camera}/{session}", self._delete)
        app.router.add_patch("/whep/{camera}/{session}", no_trickle("DELETE"))
        return app

    async def start(self) -> None:
        """Bind ``web.listen``:``web.port``; ConfigError when that address cannot be used."""
        if self._runner is not None:
            raise RuntimeError("the web server is already started")
        tls = server_context(self.cfg, self.site_id)
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_S,
            keepalive_timeout=IDLE_S,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        site = GuardedSite(
            runner, self.cfg.listen, self.cfg.port, limits=self.limits, ssl_context=tls
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError("web", [_bind_problem(self.cfg, exc)]) from exc
        self._runner, self._site = runner, site
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="web-refusals")
        log.info("local web server on %s", self.url)
        if tls is None and self.cfg.listen not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "web.https is false on %s: passwords cross the LAN in clear; set web.https = "
                "true (the default)",
                self.cfg.listen,
            )
        if not self.credentials.configured:
            log.warning("no web user in %s yet: %s", self.credentials.path, PASSWD_HINT)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if runner is not None:
            await runner.cleanup()
            self.refusals.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.refusals.tick()

    @property
    def port(self) -> int:
        """The TCP port actually bound (``web.port``, or the one chosen for port 0)."""
        if self._site is None or self._runner is None:
            raise RuntimeError("the web server is not started")
        return self._site.bound_port

    @property
    def scheme(self) -> str:
        return "https" if self.cfg.https else "http"

    @property
    def url(self) -> str:
        """Where this box's page is, as seen from the box itself."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.cfg.listen, self.cfg.listen
        )
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}"

    # -- requests -----------------------------------------------------------------------------
    @web.middleware
    async def _log_and_refuse(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Turn refusals into short text answers and write one access line per request
        (refused logins are summarised instead: see edge.web.refusals)."""
        status = 500
        self.limits.request_started(request.transport)
        try:
            try:
                response = await handler(request)
            except Refusal as refusal:
                response = refusal.response()
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.limits.request_ended(request.transport)
            log.log(
                logging.DEBUG if status in (401, 429) else logging.INFO,
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
            raise Refusal(404, "no such file")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], content_type=STATIC[name], charset="utf-8")

    async def _site_info(self, request: web.Request) -> web.Response:
        await self._authorise(request)
        return web.json_response(self.hub.describe())

    async def _diag(self, request: web.Request) -> web.Response:
        await self._authorise(request)
        report = self.diag_report()
        if report is None:
            raise Refusal(
                503,
                "no diagnostics report from edge-alarm yet: it publishes one every 10 s while "
                "it runs (`systemctl status edge-alarm`); `edge diag` runs the checks itself",
            )
        return web.json_response(api_view(report))

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._authorise(request)
        body = render(self.diag_report(), self.site_id)
        return web.Response(body=body.encode("utf-8"), headers={"Content-Type": METRICS_TYPE})

    async def _offer(self, request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        user = await self._authorise(request, camera)
        if request.content_type != SDP:
            raise Refusal(415, f"send the SDP offer with Content-Type: {SDP}")
        try:
            body = await within(request.read(), BODY_S)
        except TimeoutError:
            raise Refusal(408, f"the SDP offer did not arrive within {BODY_S:g} s") from None
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(400, "the SDP offer is not UTF-8 text") from None
        if not offer.strip():
            raise Refusal(400, "the request body must be an SDP offer")
        remote = request.remote or "unknown"
        try:
            session, answer = await within(
                self.hub.open_lan(camera, offer, user=user, remote=remote), OPEN_TIMEOUT_S
            )
        except LiveRefused as exc:
            raise refused(exc) from None
        except TimeoutError:
            raise Refusal(503, "live view did not answer in time: try again") from None
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
        missing = Refusal(404, f"no live session {session} on camera {camera}")
        owner = self.hub.session_owner(session)
        if owner is None or owner[0] != camera:
            raise missing
        if owner[1] != f"lan:{user}":
            raise Refusal(
                403,
                f"live session {session} was opened by someone else ({owner[1]}): only the "
                "user who opened it (or the central station) can end it",
            )
        try:
            closed = await within(self.hub.close(session, f"stopped by {user}"), CLOSE_TIMEOUT_S)
        except LiveRefused as exc:
            raise refused(exc) from None
        except TimeoutError:
            raise Refusal(503, "live view did not answer in time: try again") from None
        if not closed:
            raise missing
        return web.Response(text="session closed\n")

    # -- authentication -----------------------------------------------------------------------
    async def _authorise(self, request: web.Request, camera: str = "") -> str:
        """The user name of a request with good Basic credentials; Refusal otherwise.

        Every refusal (401, 429, 503 at the check cap) is counted in the refused-login
        summary; only a wrong password or unreadable credentials count as a failed guess."""
        remote = request.remote or "unknown"
        header = request.headers.get(hdrs.AUTHORIZATION)
        auth: BasicAuth | None = None
        if header is not None:
            try:
                auth = BasicAuth.decode(header, encoding="utf-8")
            except ValueError:
                auth = None
        login = auth.login if auth else ("(none)" if header is None else "(unreadable)")
        try:
            return await self._check_request(request, remote, header, auth)
        except Refusal as refusal:
            if refusal.login:
                self.refusals.refused(remote, login, refusal.status, camera)
            raise

    async def _check_request(
        self, request: web.Request, remote: str, header: str | None, auth: BasicAuth | None
    ) -> str:
        wait = self.guard.wait(remote, auth.login if auth else None)
        if wait is not None:
            raise Refusal(429, wait.reason, {hdrs.RETRY_AFTER: str(wait.seconds)})
        if not self.credentials.configured:
            problem = self.credentials.problem
            if problem:
                raise Refusal(503, f"the web users file cannot be used: {problem}")
            raise Refusal(503, f"no web user is configured on this box: {PASSWD_HINT}")
        if header is None:
            raise self._unauthorised("log in with a user created by `edge web passwd USER`")
        self.guard.in_flight += 1
        try:
            trusted = self.guard.trusted(remote)
            ok = auth is not None and await self._check(auth.login, auth.password, trusted)
        finally:
            self.guard.in_flight -= 1
        if auth is None or not ok:
            user = auth.login if auth else None
            known = user is not None and self.credentials.has(user)
            self.guard.failed(remote, user, known_user=known)
            raise self._unauthorised("wrong user name or password")
        self.guard.succeeded(remote)
        request[USER_KEY] = auth.login
        return auth.login

    async def _check(self, user: str, password: str, trusted: bool = False) -> bool:
        """scrypt off the event loop, a bounded number at a time; the last TRUSTED_CHECKS
        places in the queue are kept for addresses that logged in before, so a burst of
        guesses cannot turn the installer away with 503."""
        if self._checks >= MAX_CHECKS - (0 if trusted else TRUSTED_CHECKS):
            raise Refusal(
                503, "too many logins at once: retry", {hdrs.RETRY_AFTER: "2"}, login=True
            )
        self._checks += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(self.credentials.verify, user, password)
        finally:
            self._checks -= 1

    def _unauthorised(self, reason: str) -> Refusal:
        return Refusal(401, reason, {hdrs.WWW_AUTHENTICATE: f'Basic realm="edge {self.site_id}"'})


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
        return f"{where}: web.listen must be an address of this box (e.g. its LAN address)"
    return where
